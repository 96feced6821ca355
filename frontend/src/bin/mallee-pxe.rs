//! `mallee-pxe`: the frontend's PXE service on its own, for tests, benchmarks and trying it by
//! hand. `mallee-pxe --interface tap0 --server-ip 10.9.0.1 --image target/images/node`.

use anyhow::{bail, Context};
use mallee_frontend::pxe::{self, http::NodeParams, PxeConfig};
use std::path::PathBuf;

const USAGE: &str = "usage: mallee-pxe --interface IFACE --server-ip IP --image DIR \
[--http-port N] [--tftp-root DIR] [--lease-db FILE] [--frontend IP:PORT] [--cluster NAME] \
[--secret SECRET] [--frontend-key sha256:HEX] [--range-start IP --range-end IP] [--bridge yes]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut flags = std::collections::HashMap::new();
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else {
            bail!("unexpected argument `{flag}`\n{USAGE}");
        };
        let value = args
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        flags.insert(name.to_string(), value);
    }
    let get = |name: &str| flags.get(name).cloned();
    let need = |name: &str| get(name).with_context(|| format!("--{name} is required\n{USAGE}"));
    let server_ip = need("server-ip")?.parse().context("--server-ip")?;
    let node = NodeParams {
        frontend: get("frontend")
            .unwrap_or_else(|| format!("{server_ip}:8773"))
            .parse()
            .context("--frontend")?,
        cluster: get("cluster").unwrap_or_else(|| "cluster0".into()),
        enrollment_secret: get("secret").unwrap_or_else(|| "mallee-dev-secret".into()),
        bridge: get("bridge").is_some_and(|b| b == "yes"),
        frontend_key: get("frontend-key")
            .map(|k| k.parse())
            .transpose()
            .context("--frontend-key (the pin the frontend logs at start)")?,
    };
    let mut config = PxeConfig::new(&need("interface")?, server_ip, need("image")?.into(), node);
    if let Some(p) = get("http-port") {
        config.http_port = p.parse().context("--http-port")?;
    }
    if let Some(d) = get("tftp-root") {
        config.tftp_root = PathBuf::from(d);
    }
    if let Some(f) = get("lease-db") {
        config.lease_db = PathBuf::from(f);
    }
    if let Some(ip) = get("range-start") {
        config.range_start = ip.parse().context("--range-start")?;
    }
    if let Some(ip) = get("range-end") {
        config.range_end = ip.parse().context("--range-end")?;
    }
    let handle = pxe::serve(config)
        .await
        .context("starting the PXE service")?;
    println!("mallee-pxe: serving {}", handle.boot_script_url);
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
