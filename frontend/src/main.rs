//! `mallee-frontend` binary: `[--config FILE] [serve]` runs the daemon (the APIs and the web
//! console); `[--config FILE] admin user create|list|delete|password` manages users and their
//! console passwords, `admin node list|approve ID|reject ID` node admission and `admin audit
//! [--limit N]` prints the audit log;
//! `[--config FILE] storage` runs the storage controller (as root) that exports the volumes
//! the daemon lists over AoE.

use anyhow::{bail, Context};
use mallee_frontend::appliance::{Appliance, UPGRADE_STAGED_EXIT};
use mallee_frontend::cloud::Changes;
use mallee_frontend::console::Console;
use mallee_frontend::ec2::Ec2;
use mallee_frontend::gateway::{self, GatewaySite};
use mallee_frontend::identity::Identity;
use mallee_frontend::nodes::NodeApi;
use mallee_frontend::storage::keeper::{self, StorageSite, VOLUMES_DIR};
use mallee_frontend::tls::{self, ServerTls};
use mallee_frontend::{admin, config::Config, privilege, server, store::Store, walrus::Walrus};
use mallee_proto::cmdline::PublicKeyPin;
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // State, object data and credentials are private to the daemon's user.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config_path: Option<PathBuf> = None;
    if args.first().map(String::as_str) == Some("--config") {
        if args.len() < 2 {
            bail!("--config needs a file");
        }
        config_path = Some(PathBuf::from(args.remove(1)));
        args.remove(0);
    }
    let config = Config::load(config_path.as_deref())?;
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(config),
        Some("admin") => {
            let store = Store::open(&config.data_dir).context("opening the store")?;
            println!(
                "{}",
                admin::run(&store, &args[1..], &mut std::io::stdin().lock())?
            );
            Ok(())
        }
        Some("storage") => storage(&config),
        Some(other) => bail!("unknown command {other:?}; try `serve`, `admin` or `storage`"),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    store.recover().context("recovering the store")?;
    let creds = config.credentials_path();
    let new_admin = store.ensure_admin()?;
    if new_admin.is_some() || !creds.exists() {
        let admin = store
            .list_users()?
            .into_iter()
            .find(|u| u.name == "admin")
            .context("no admin user")?;
        admin::write_credentials(&creds, &admin)?;
        tracing::info!(path = %creds.display(), "wrote the admin credentials file");
    }
    let console_password = config.console_password_path();
    if admin::ensure_console_password(&store, &console_password)? {
        tracing::info!(
            path = %console_password.display(),
            "web console: the admin signs in at /_console/ as user admin with the password in this file (mode 0600); change it with `mallee-frontend admin user password admin --password-stdin`"
        );
    }
    // Made, loaded or renewed while still root: the files go to the daemon's user with the
    // data directory, and the CA bundle may live where only root writes.
    let (tls, pin) = match config.tls.enabled {
        true => {
            let (tls, pin) = start_tls(&config)?;
            (Some(tls), Some(pin))
        }
        false => (None, None),
    };
    let listeners = server::Listeners::bind(config.listen)
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listeners.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // PXE binds port 67 on one device and 69: while still root.
    let pxe = match config.pxe_config(pin) {
        Some(pxe) => {
            let handle = rt
                .block_on(mallee_frontend::pxe::serve(pxe))
                .context("starting the PXE service")?;
            println!("mallee-frontend: pxe serving {}", handle.boot_script_url);
            Some(handle)
        }
        None => None,
    };
    // setuid applies to every thread of the process (the runtime's workers too).
    if let Some(user) = privilege::drop_root(
        &config.run_as,
        &config.data_dir,
        &[&creds, &console_password],
    )? {
        tracing::info!(%user, "dropped root privileges");
    }
    privilege::check_data_dir(&config.data_dir)?;
    mallee_frontend::http::body::set_body_idle(std::time::Duration::from_secs(
        config.http.idle_secs.max(1),
    ));
    let store = Arc::new(store);
    let changes = Arc::new(Changes::default());
    let appliance = (config.appliance_dir.clone()).map(|dir| Arc::new(Appliance::new(dir)));
    let console = Arc::new(Console::new(
        store.clone(),
        tls.is_some().then(|| config.ca_bundle_path()),
        &config.region,
    ));
    let apis = Arc::new(server::Apis {
        walrus: Walrus::new(store.clone(), &config.region, config.max_clock_skew_secs),
        ec2: Ec2::new(
            store.clone(),
            config.ec2.clone(),
            changes.clone(),
            &config.region,
            config.max_clock_skew_secs,
        )
        .with_network(config.network.clone())
        .with_gateway_dir(config.gateway_dir.clone())
        .with_storage(config.storage.clone())
        .with_appliance(appliance.clone()),
        identity: Identity::new(store.clone(), config.max_clock_skew_secs),
        nodes: Arc::new(NodeApi {
            store,
            cfg: config.ec2.clone(),
            changes,
        }),
        console: Some(console),
    });
    rt.block_on(async move {
        let _pxe = pxe;
        match &tls {
            Some(_) => {
                println!(
                    "mallee-frontend: serving https; clients verify it with the CA bundle {}",
                    config.ca_bundle_path().display()
                );
                if let Some(pin) = pin {
                    println!("mallee-frontend: nodes pin {pin}");
                }
            }
            None => println!("mallee-frontend: serving plain http ([tls] enabled = false)"),
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("mallee-frontend: listening on {scheme}://{addr}");
        use std::io::Write;
        std::io::stdout().flush()?;
        tokio::spawn(apis.nodes.clone().watch_liveness());
        tokio::spawn(keeper::run(
            apis.nodes.store.clone(),
            storage_site(&config),
            apis.nodes.changes.clone(),
        ));
        if let Some(site) = gateway_site(&config) {
            let changed = apis.nodes.changes.subscribe_network();
            tokio::spawn(gateway::run(apis.nodes.store.clone(), site, changed));
        }
        let upgrade = async {
            match &appliance {
                Some(a) => a.restart_requested().await,
                None => std::future::pending().await,
            }
        };
        if let Some(tls) = &tls {
            tokio::spawn(tls.clone().renew_periodically());
        }
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        server::serve(listeners, apis, config.http, acceptor, upgrade).await?;
        // Only a staged upgrade stops the server: init installs it and reboots.
        println!("mallee-frontend: upgrade staged; exiting for mallee-init to install it");
        std::io::stdout().flush()?;
        std::process::exit(UPGRADE_STAGED_EXIT);
    })
}

/// TLS on the API listener: the CA and server certificate in `<data_dir>/tls` (made, loaded or
/// renewed) and the CA bundle for clients, written beside the admin credentials on every start.
/// Returns the server and the pin of its key, which PXE-booted nodes get on their command line.
fn start_tls(config: &Config) -> anyhow::Result<(Arc<ServerTls>, PublicKeyPin)> {
    let (server_tls, identity) =
        ServerTls::start(config.tls_files()).context("setting up TLS ([tls] enabled = true)")?;
    // Each renewal check takes the machine's addresses as they are then (DHCP may move them).
    let names = config.clone();
    let server_tls = server_tls.with_names(Box::new(move || names.tls_names(&tls::local_addrs())));
    let bundle = config.ca_bundle_path();
    tls::write_atomic(&bundle, identity.ca_pem.as_bytes(), 0o644)
        .context("writing the CA bundle")?;
    tracing::info!(
        bundle = %bundle.display(),
        pin = %identity.pin,
        not_after = %identity.not_after,
        "TLS: server certificate loaded; nodes pin the key's SHA-256"
    );
    Ok((Arc::new(server_tls), identity.pin))
}

/// Where volumes live and their exports are handed to the storage controller; they are served
/// on `[storage] interface`, else the `[pxe]` private NIC.
fn storage_site(config: &Config) -> StorageSite {
    let interface = (config.storage.interface.clone())
        .or_else(|| config.pxe.as_ref().map(|p| p.interface.clone()))
        .unwrap_or_default();
    StorageSite {
        dir: config.data_dir.join(mallee_proto::storage::STORAGE_DIR),
        volumes: config.data_dir.join(VOLUMES_DIR),
        interface,
    }
}

/// The storage controller of `<data_dir>/storage`: stays root (AF_PACKET sockets) until told
/// to stop (SIGTERM, SIGINT), when it stops its exports cleanly.
fn storage(config: &Config) -> anyhow::Result<()> {
    let dir = config.data_dir.join(mallee_proto::storage::STORAGE_DIR);
    let controller = mallee_frontend::storage::Controller::new(&dir);
    tracing::info!(dir = %dir.display(), "storage controller watching");
    println!("mallee-frontend: storage controller serving");
    use std::io::Write;
    std::io::stdout().flush()?;
    controller.run()?;
    tracing::info!("storage controller stopped");
    Ok(())
}

/// Where and how the gateway is handed to init: only on a machine whose init applies it
/// (`gateway_dir`) and that has a private NIC (`[pxe]`).
fn gateway_site(config: &Config) -> Option<GatewaySite> {
    let dir = config.gateway_dir.clone()?;
    let Some(pxe) = &config.pxe else {
        tracing::warn!("gateway_dir is set but there is no [pxe] private NIC: no gateway");
        return None;
    };
    Some(GatewaySite {
        dir,
        private_interface: pxe.interface.clone(),
        api_port: config.listen.port(),
        subnet: config.network.subnet,
        public_interface: config.network.public_interface.clone(),
    })
}
