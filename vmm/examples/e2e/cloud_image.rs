//! The node's last step: `mallee-vmm` boots the real Debian cloud image (image-build's
//! `debian-cloud`) and cloud-init configures it as it would on EC2. The test gives the node the
//! image's root file system as its disk `/dev/vda` (a copy) and carries the image's kernel and
//! initrd and an SSH public key under [`DIR`]. The VMM gets a `--config` file: that disk as the
//! guest's, `root=` as `mallee_proto::root_device` reads it off the disk, an address through
//! its DHCP on a tap of its own (the node takes the gateway address on it), SMBIOS tables that
//! say EC2 and a metadata service with an instance id, the key, and user data that writes a file
//! and prints [`MARKER`] with the instance id and that file's content on the console. Once
//! cloud-init's final line is on the guest's console, the node reads the SSH banner from the
//! guest's port 22, stops the VMM through its API and prints the guest's console and one
//! summary line (`vmm-e2e-node: debian cloud-init ok=... boot_s=...`).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use mallee_proto::vmm::{
    Disk, GuestAddress, InstanceMetadata, Nic, OnReboot, Request, SystemIdentity, TapSource, Uuid,
    VmmConfig,
};
use mallee_proto::{Mac, MetadataDocument, PublicKey};

use crate::common::say;

/// Where the test put the image's kernel, initrd, command line and the public key.
pub const DIR: &str = "/vmm-e2e/debian";
/// The node's disk the image is on.
const DISK: &str = "/dev/vda";
const TAP: &str = "vmtap1";
const API: &str = "/tmp/debian.sock";
const CONFIG: &str = "/tmp/debian.json";
const CONSOLE: &str = "/tmp/debian.console";
const FAILURE: &str = "/tmp/debian.failure";
pub const INSTANCE_ID: &str = "i-deb00001";
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xe2, 0xe0, 0x02];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 5);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const PREFIX_LEN: u8 = 24;
const UUID: &str = "ec2deb01-2345-8678-9abc-def012345678";
/// What the user data's command prints first on the guest's console.
pub const MARKER: &str = "mallee-cloud-init-ok";
/// How long the guest may take to get to cloud-init's final line.
const BOOT_SECS: u64 = 600;

/// The user data: a file written by `write_files`, a console line from `runcmd` naming the
/// instance id cloud-init took and the file's content.
fn user_data() -> String {
    format!(
        "#cloud-config\n\
write_files:\n\
\x20 - path: /etc/mallee-e2e\n\
\x20   content: \"written-by-cloud-init\\n\"\n\
runcmd:\n\
\x20 - echo \"{MARKER} $(cat /var/lib/cloud/data/instance-id) file=$(cat /etc/mallee-e2e)\" > /dev/ttyS0\n"
    )
}

fn config(root: &str, public_key: &str, user_data: &str) -> VmmConfig {
    let mac = Mac(MAC);
    let mut c = VmmConfig::new(format!("{DIR}/vmlinuz"));
    c.initrd = Some(format!("{DIR}/initrd.img").into());
    c.cmdline = format!("console=ttyS0 root={root}");
    c.memory_mib = 512;
    c.vcpus = 2;
    c.disks = vec![Disk::file(DISK, Some("root"))];
    c.nics = vec![Nic {
        tap: TapSource::Name(TAP.into()),
        mac,
        address: Some(GuestAddress {
            address: GUEST_IP,
            prefix_len: PREFIX_LEN,
            gateway: Some(GATEWAY),
            dns: vec![GATEWAY],
            hostname: Some("deb-e2e".into()),
        }),
    }];
    c.console = Some(CONSOLE.into());
    c.api_socket = Some(API.into());
    c.failure_path = Some(FAILURE.into());
    // As the node agent does for an instance: a guest that resets comes back (nested TCG has
    // reset a guest mid-boot once in a while); the summary line counts the boots.
    c.on_reboot = OnReboot::Restart;
    c.smbios = Some(SystemIdentity {
        manufacturer: "Amazon EC2".into(),
        product: "m1.small".into(),
        uuid: UUID.parse().unwrap_or(Uuid::nil()),
        serial: Some(UUID.to_ascii_uppercase()),
        asset_tag: Some(INSTANCE_ID.into()),
    });
    c.metadata = Some(InstanceMetadata {
        document: MetadataDocument {
            instance_id: INSTANCE_ID.into(),
            ami_id: "emi-deb00001".into(),
            reservation_id: "r-deb00001".into(),
            instance_type: "m1.small".into(),
            hostname: "deb-e2e".into(),
            local_ipv4: GUEST_IP.to_string(),
            mac: mac.to_string(),
            availability_zone: "mallee-e2e".into(),
            public_keys: vec![PublicKey {
                name: "e2e".into(),
                openssh: public_key.trim().to_string(),
            }],
            ..MetadataDocument::default()
        },
        user_data: Some(base64::engine::general_purpose::STANDARD.encode(user_data)),
        options: Default::default(),
    });
    c
}

/// What `root=` names the disk's root file system by, or the image's own command line's.
fn root_device() -> Result<String, String> {
    let disk = std::fs::File::open(DISK).map_err(|e| format!("{DISK}: {e}"))?;
    match mallee_proto::root_device::locate(&disk) {
        Ok(Some(root)) => Ok(root.to_string()),
        Ok(None) | Err(_) => Ok("LABEL=debian-root".into()),
    }
}

fn console_text() -> String {
    String::from_utf8_lossy(&std::fs::read(CONSOLE).unwrap_or_default()).into_owned()
}

/// cloud-init's final line (`Cloud-init v. ... finished at ...`).
fn finished(console: &str) -> bool {
    console
        .lines()
        .any(|l| l.contains("Cloud-init v.") && l.contains("finished at"))
}

/// The first line the guest's sshd sends, tried until `secs` pass.
fn ssh_banner(secs: u64) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let addr = SocketAddr::from((GUEST_IP, 22));
    loop {
        let attempt =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut banner = Vec::new();
                let mut byte = [0u8; 1];
                while banner.len() < 255 && s.read(&mut byte)? == 1 && byte[0] != b'\n' {
                    banner.push(byte[0]);
                }
                Ok(String::from_utf8_lossy(&banner).trim().to_string())
            });
        match attempt {
            Ok(b) if !b.is_empty() => return Ok(b),
            Ok(_) if Instant::now() > deadline => return Err("empty banner".into()),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// After the guest stopped: the lines of its `/var/log/cloud-init.log` that tell how the
/// datasource went (the disk mounted read-only on the node), for a failed run.
fn cloud_init_log() {
    const MNT: &str = "/tmp/debian-root";
    let _ = std::fs::create_dir_all(MNT);
    let (dev, mnt, fs) = (c"/dev/vda", c"/tmp/debian-root", c"ext4");
    // SAFETY: NUL-terminated strings; no mount data.
    let rc = unsafe {
        libc::mount(
            dev.as_ptr(),
            mnt.as_ptr(),
            fs.as_ptr(),
            libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        say(&format!(
            "vmm-e2e-node: debian mount {DISK}: {}",
            std::io::Error::last_os_error()
        ));
        return;
    }
    let log = std::fs::read(format!("{MNT}/var/log/cloud-init.log")).unwrap_or_default();
    let interesting = [
        "DataSourceEc2",
        "WARNING",
        "Traceback",
        "Error",
        "ERROR",
        "failed",
        "token",
    ];
    let log = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| interesting.iter().any(|w| l.contains(w)))
        .collect();
    lines[lines.len().saturating_sub(200)..]
        .iter()
        .for_each(|l| say(&format!("debian-log: {l}")));
    // SAFETY: a NUL-terminated path.
    unsafe { libc::umount(mnt.as_ptr()) };
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("/usr/sbin/ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One boot of the image under `mallee-vmm`, until cloud-init's final line or a failure.
pub struct Run<T> {
    /// How long after the VMM started cloud-init printed its final line, or why it did not.
    pub booted: Result<Duration, String>,
    /// What `while_up` returned, when the guest finished booting.
    pub while_up: Option<T>,
    /// The guest's whole console.
    pub console: String,
    /// The VMM's exit status (-1: killed after the shutdown asked through its API timed out).
    pub status: i32,
    /// What the VMM's API answered to the shutdown.
    pub stop: Result<(), String>,
}

/// Boots the image with `user_data`, printing the guest's console as it goes; once cloud-init
/// has finished, runs `while_up` with the guest still up, then stops the VMM through its API.
pub fn boot<T>(user_data: &str, while_up: impl FnOnce() -> T) -> Result<Run<T>, String> {
    let key = std::fs::read_to_string(format!("{DIR}/id.pub")).map_err(|e| format!("key: {e}"))?;
    // The disk shows up once virtio_blk probed it.
    let started = Instant::now();
    while !std::path::Path::new(DISK).exists() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("no {DISK}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let root = root_device()?;
    crate::common::make_persistent_tap(TAP).map_err(|e| format!("tap {TAP}: {e}"))?;
    ip(&[
        "addr",
        "add",
        &format!("{GATEWAY}/{PREFIX_LEN}"),
        "dev",
        TAP,
    ])?;
    ip(&["link", "set", TAP, "up"])?;
    let cfg = config(&root, &key, user_data);
    let json = serde_json::to_vec_pretty(&cfg).map_err(|e| e.to_string())?;
    std::fs::write(CONFIG, json).map_err(|e| format!("{CONFIG}: {e}"))?;
    say(&format!(
        "vmm-e2e-node: debian starting mallee-vmm root={root} ({} vCPUs, {} MiB)",
        cfg.vcpus, cfg.memory_mib
    ));
    let started = Instant::now();
    let mut child = Command::new("/bin/mallee-vmm")
        .args(["--config", CONFIG])
        .spawn()
        .map_err(|e| format!("spawn mallee-vmm: {e}"))?;
    let mut next_note = 30;
    let mut shown = 0;
    let booted = loop {
        let console = console_text();
        // The guest's console as it goes, whole lines only.
        let upto = console.rfind('\n').map_or(0, |i| i + 1);
        if upto > shown {
            console[shown..upto]
                .lines()
                .for_each(|l| say(&format!("debian-console: {}", l.trim_end())));
            shown = upto;
        }
        if finished(&console[..upto]) {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("mallee-vmm exited early: {status}"));
        }
        let waited = started.elapsed().as_secs();
        if waited >= BOOT_SECS {
            break Err(format!("no cloud-init final line in {BOOT_SECS} s"));
        }
        if waited >= next_note {
            say(&format!("vmm-e2e-node: debian waiting {waited} s"));
            next_note += 30;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let while_up = booted.is_ok().then(while_up);
    let stop = crate::vmm_api::call(API, &Request::Shutdown).map(|_| ());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s.code().unwrap_or(-1),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break -1,
        }
    };
    let console = console_text();
    console
        .get(shown..)
        .unwrap_or("")
        .lines()
        .for_each(|l| say(&format!("debian-console: {}", l.trim_end())));
    if let Ok(f) = std::fs::read_to_string(FAILURE) {
        say(&format!("vmm-e2e-node: debian vmm failure {}", f.trim()));
    }
    Ok(Run {
        booted,
        while_up,
        console,
        status,
        stop,
    })
}

/// Boots the image and checks what cloud-init did; `Ok(false)` when a check failed.
pub fn check() -> Result<bool, String> {
    let run = boot(&user_data(), || ssh_banner(60))?;
    let console = &run.console;
    let want = format!("{MARKER} {INSTANCE_ID} file=written-by-cloud-init");
    let marker_ok = console.lines().any(|l| l.trim_end().ends_with(&want));
    let banner = run.while_up.unwrap_or_else(|| Err("not booted".into()));
    let banner_text = match &banner {
        Ok(b) => b.clone(),
        Err(e) => format!("none ({e})"),
    };
    let banner_ok = banner
        .as_ref()
        .is_ok_and(|b| b.starts_with("SSH-2.0-OpenSSH"));
    let ok = run.booted.is_ok() && marker_ok && banner_ok;
    // Each boot of the guest's kernel prints its banner once.
    let boots = console
        .lines()
        .filter(|l| l.contains("Linux version"))
        .count();
    if !ok && run.status >= 0 {
        cloud_init_log();
    }
    say(&format!(
        "vmm-e2e-node: debian stop {:?} vmm exit={}",
        run.stop, run.status
    ));
    if let Err(e) = &run.booted {
        say(&format!("vmm-e2e-node: debian FAIL {e}"));
    }
    say(&format!(
        "vmm-e2e-node: debian cloud-init ok={ok} instance-id={INSTANCE_ID} marker={} ssh-banner={banner_text} boots={boots} boot_s={}",
        marker_ok,
        run.booted.map(|d| format!("{:.1}", d.as_secs_f64())).unwrap_or_else(|_| "none".into())
    ));
    Ok(ok)
}
