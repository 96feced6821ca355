//! The network benchmark's peer VMM (`just bench net`, `qemu-tests/benches/net.rs`): installed
//! as `/bin/mallee-vmm` in that benchmark's node image, with the real VMM beside it as
//! [`OURS`]. The node agent starts it as it starts `mallee-vmm` (`--config FILE`); an instance
//! whose user data has the line [`MARKER`] runs under `qemu-system-x86_64 -enable-kvm` with the
//! same kernel, ramdisk, root disk, memory, vCPUs, tap and MAC (`-netdev tap,vhost=on` +
//! virtio-net-pci, QEMU's ordinary best configuration for a tap), every other instance under
//! `mallee-vmm` itself. QEMU answers neither the guest's DHCP nor its metadata requests, so its
//! guest gets its address (`ip=`) and user data (`mallee.user_data=`) on its kernel command line;
//! the test guest takes both from there (`init/src/guest.rs`). The console goes to the file the
//! agent reads for GetConsoleOutput. Not in any shipped image.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use mallee_proto::vmm::{DiskSource, TapSource, VmmConfig};

/// The real VMM in the benchmark's node image.
const OURS: &str = "/bin/mallee-vmm-ours";
/// QEMU in the benchmark's node image, with its libraries and firmware.
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The user-data line that puts an instance under QEMU.
pub const MARKER: &str = "#mallee-peer: qemu";

/// Why the peer could not start.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("usage: qemu_peer --config FILE (as the node agent starts mallee-vmm)")]
    Usage,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("the instance's user data is not base64: {0}")]
    UserData(base64::DecodeError),
    #[error("QEMU cannot run {0}: only file-backed disks (plain or copy-on-write) and named taps are supported")]
    Unsupported(String),
    #[error("exec {program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

/// The instance's user data, decoded (empty when it has none).
fn user_data(cfg: &VmmConfig) -> Result<Vec<u8>, PeerError> {
    match cfg.metadata.as_ref().and_then(|m| m.user_data.as_deref()) {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(PeerError::UserData),
        None => Ok(Vec::new()),
    }
}

/// Whether the user data asks for QEMU.
fn wants_qemu(user_data: &[u8]) -> bool {
    String::from_utf8_lossy(user_data)
        .lines()
        .any(|l| l.trim() == MARKER)
}

/// The guest's kernel command line under QEMU: the agent's, then its address as the kernel's
/// `ip=` (`client::gateway:netmask:hostname::off:dns`) and its user data.
fn qemu_cmdline(cfg: &VmmConfig) -> String {
    // Nested under the benchmark's TCG nodes the guest's clock runs unevenly, and the boot-time
    // check that the IO-APIC timer ticks (which mallee-vmm's guests pass) can stall; cloud images
    // commonly turn it off for virtual machines.
    let mut line = format!("{} no_timer_check", cfg.cmdline);
    if let Some(a) = cfg.nics.first().and_then(|n| n.address.as_ref()) {
        let gateway = a.gateway.map(|g| g.to_string()).unwrap_or_default();
        let dns = a.dns.first().map(|d| d.to_string()).unwrap_or_default();
        let host = a.hostname.clone().unwrap_or_default();
        line.push_str(&format!(
            " ip={}::{gateway}:{}:{host}::off:{dns}",
            a.address,
            a.netmask()
        ));
    }
    if let Some(b64) = cfg.metadata.as_ref().and_then(|m| m.user_data.as_deref()) {
        line.push_str(&format!(" mallee.user_data={b64}"));
    }
    line
}

/// The kernel QEMU boots: the bzImage, as QEMU ordinarily does. The agent hands the VMM the
/// kernel it unpacked into its cache (`<sha>.vmlinux`, beside the bzImage `<sha>` it came
/// from), which QEMU would boot only through PVH and its `pvh.bin` option ROM.
fn bz_image(kernel: &Path) -> PathBuf {
    let name = kernel.to_string_lossy();
    match name.strip_suffix(".vmlinux").map(PathBuf::from) {
        Some(bz) if bz.is_file() => bz,
        _ => kernel.to_path_buf(),
    }
}

/// The QEMU command that runs `cfg`'s guest.
fn qemu_command(cfg: &VmmConfig) -> Result<Command, PeerError> {
    let mut c = Command::new(QEMU);
    c.args(["-L", "/usr/share/qemu", "-L", "/usr/share/seabios"])
        .args(["-M", "q35", "-enable-kvm", "-cpu", "host"])
        .args(["-m", &format!("{}M", cfg.memory_mib)])
        .args(["-smp", &cfg.vcpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(bz_image(&cfg.kernel))
        .args(["-append", &qemu_cmdline(cfg)]);
    if let Some(initrd) = &cfg.initrd {
        c.arg("-initrd").arg(initrd);
    }
    match &cfg.console {
        Some(path) => c.args([
            "-chardev",
            &format!("file,id=console,path={},append=on", path.display()),
            "-serial",
            "chardev:console",
        ]),
        None => c.args(["-serial", "null"]),
    };
    for (i, disk) in cfg.disks.iter().enumerate() {
        // A copy-on-write root (the cached image as base) runs over the same base with QEMU's
        // own copy-on-write (`snapshot=on`: the writes go to a temporary overlay, the base is
        // never written), where mallee-vmm keeps them in the instance's sparse top.
        let (path, cow) = match &disk.source {
            DiskSource::File(path) => (path, ""),
            DiskSource::Overlay { base, top } => {
                // QEMU's temporary overlay lives where the instance's own top would.
                if let Some(dir) = top.parent() {
                    c.env("TMPDIR", dir);
                }
                (base, ",snapshot=on")
            }
            DiskSource::Aoe { .. } => {
                return Err(PeerError::Unsupported(format!("disk {}", disk.source)))
            }
        };
        let ro = if disk.read_only { ",readonly=on" } else { "" };
        c.args([
            "-drive",
            &format!(
                "file={},if=none,id=disk{i},format=raw{ro}{cow}",
                path.display()
            ),
        ]);
        let serial = (disk.serial.as_ref()).map_or(String::new(), |s| format!(",serial={s}"));
        c.args(["-device", &format!("virtio-blk-pci,drive=disk{i}{serial}")]);
    }
    for (i, nic) in cfg.nics.iter().enumerate() {
        let TapSource::Name(tap) = &nic.tap else {
            return Err(PeerError::Unsupported(format!("tap {}", nic.tap)));
        };
        c.args([
            "-netdev",
            &format!("tap,id=net{i},ifname={tap},script=no,downscript=no,vhost=on"),
            "-device",
            &format!("virtio-net-pci,netdev=net{i},mac={},romfile=", nic.mac),
        ]);
    }
    if cfg.rng {
        c.args(["-device", "virtio-rng-pci"]);
    }
    Ok(c)
}

fn config_path() -> Result<PathBuf, PeerError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, path] if flag == "--config" => Ok(PathBuf::from(path)),
        _ => Err(PeerError::Usage),
    }
}

fn read_config(path: &Path) -> Result<VmmConfig, PeerError> {
    let bytes = std::fs::read(path).map_err(|source| PeerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    mallee_proto::decode(&bytes).map_err(|e| PeerError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Replaces this process with the VMM the instance asks for; returns only on failure.
fn run() -> PeerError {
    let path = match config_path() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let cfg = match read_config(&path) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let qemu = match user_data(&cfg) {
        Ok(data) => wants_qemu(&data),
        Err(e) => return e,
    };
    let (program, mut cmd) = if qemu {
        match qemu_command(&cfg) {
            Ok(c) => (QEMU, c),
            Err(e) => return e,
        }
    } else {
        let mut c = Command::new(OURS);
        c.args(std::env::args_os().skip(1));
        (OURS, c)
    };
    let id = (cfg.metadata.as_ref()).map_or("the instance", |m| m.document.instance_id.as_str());
    eprintln!("qemu-peer: {id} runs under {program}");
    if let (true, Some(console)) = (qemu, &cfg.console) {
        // QEMU's own complaints go where GetConsoleOutput shows them, after its command line.
        if let Err(e) = to_console(console, &format!("qemu-peer: {cmd:?}\n")) {
            eprintln!("qemu-peer: {}: {e}", console.display());
        }
    }
    PeerError::Exec {
        program: program.into(),
        source: cmd.exec(),
    }
}

/// Appends `line` to the console file and makes it this process's stderr (QEMU's after exec).
fn to_console(console: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(console)?;
    file.write_all(line.as_bytes())?;
    // SAFETY: dup2 onto descriptor 2 of this process, from a descriptor it owns and keeps open
    // for the call.
    match unsafe { libc::dup2(file.as_raw_fd(), 2) } {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

fn main() {
    let e = run();
    eprintln!("qemu-peer: {e}");
    std::process::exit(1);
}
