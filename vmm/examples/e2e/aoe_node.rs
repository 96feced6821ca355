//! AoE inside a nested node, for the node-side programs: veth pairs whose storage end lives in a
//! network namespace (made with iproute2's `ip`, which the node image carries), the modules the
//! image lists for the runner (loaded with parameters, e.g. the Linux `aoe` driver held to one
//! interface), exports served by `mallee-aoe`'s target configured as the storage controller
//! configures it (the attached node's MAC as the whole mask list, no remote edits, no
//! reservation), and the Linux driver's control files. It measures and judges nothing; the
//! runners (`e2e_node`, `ebs_node`) do.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mallee_aoe::net::PacketSocket;
use mallee_aoe::target::{AccessControl, Backend, Target, TargetConfig};
use mallee_aoe::wire::Mac;

/// iproute2's `ip`, at its host path in the node image.
const IP: &str = "/usr/sbin/ip";
/// The modules the node image carries for the runner: `NAME PATH` lines in load order.
const MODULE_LIST: &str = "/vmm-e2e/modules";
/// Where `ip netns add` pins namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Runs `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(IP)
        .args(args)
        .output()
        .map_err(|e| format!("run {IP}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A veth pair: `outer` in the node's own namespace, `inner` in namespace `ns`; both up.
pub struct Veth {
    pub ns: String,
    pub outer: String,
    pub inner: String,
}

impl Veth {
    /// Makes the pair (and namespace `ns`, unless it exists) with `mtu` on both ends.
    pub fn new(ns: &str, outer: &str, inner: &str, mtu: u32) -> Result<Veth, String> {
        // iproute2 may pin namespaces under /var/run/netns: let both names lead to one place.
        std::fs::create_dir_all(NETNS_DIR).map_err(|e| format!("{NETNS_DIR}: {e}"))?;
        if !Path::new("/var/run").exists() {
            std::os::unix::fs::symlink("/run", "/var/run").map_err(|e| format!("/var/run: {e}"))?;
        }
        if !Path::new(NETNS_DIR).join(ns).exists() {
            ip(&["netns", "add", ns])?;
        }
        let mtu = mtu.to_string();
        ip(&["link", "add", outer, "type", "veth", "peer", "name", inner])?;
        ip(&["link", "set", inner, "netns", ns])?;
        ip(&["-n", ns, "link", "set", inner, "mtu", &mtu, "up"])?;
        ip(&["link", "set", outer, "mtu", &mtu, "up"])?;
        Ok(Veth {
            ns: ns.into(),
            outer: outer.into(),
            inner: inner.into(),
        })
    }
}

/// The namespace file of `ns`.
fn netns(ns: &str) -> Result<File, String> {
    let path = Path::new(NETNS_DIR).join(ns);
    File::open(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `f` on a thread that entered namespace `ns` (sockets it opens stay there).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let file = netns(ns)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns only reads the descriptor, which `file` keeps open; it moves just
            // this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| format!("thread in {ns} panicked"))?
    })
}

/// Starts `cmd` inside namespace `ns`.
pub fn spawn_in_ns(ns: &str, cmd: &mut Command) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let fd = netns(ns)?;
    let raw = fd.as_raw_fd();
    // SAFETY: between fork and exec the closure only makes the setns system call on a
    // descriptor the parent keeps open until spawn returns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"));
    drop(fd);
    child
}

/// Loads every module of the image's list in order; `params` gives some of them parameters
/// (`("aoe", "aoe_iflist=eth9")`). Already loaded is fine.
pub fn load_modules(params: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| format!("osrelease: {e}"))?;
    let list = std::fs::read_to_string(MODULE_LIST).map_err(|e| format!("{MODULE_LIST}: {e}"))?;
    let mut loaded = Vec::new();
    for (name, path) in list.lines().filter_map(|l| l.split_once(' ')) {
        let full = format!("/lib/modules/{}/{path}", release.trim());
        let f = File::open(&full).map_err(|e| format!("{full}: {e}"))?;
        let given = params.iter().find(|(m, _)| *m == name).map_or("", |p| p.1);
        let args = CString::new(given).map_err(|_| format!("parameters of {name}: a NUL"))?;
        // SAFETY: finit_module reads the module from the descriptor and the NUL-terminated
        // parameter string, both alive for the call.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), args.as_ptr(), 0) };
        let err = std::io::Error::last_os_error();
        if rc != 0 && err.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("finit_module {name} {given:?}: {err}"));
        }
        loaded.push(name.to_string());
    }
    Ok(loaded)
}

/// The MAC address of interface `iface` in the calling thread's namespace.
pub fn mac_of(iface: &str) -> Result<Mac, String> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|e| format!("{path}: {text:?}: {e}"))
}

/// One volume to export.
pub struct ExportSpec<'a> {
    pub backing: &'a Path,
    pub shelf: u16,
    pub slot: u8,
    /// The mask list: the attached node's NIC only.
    pub allowed: Vec<Mac>,
}

/// Serves `spec` on `veth.inner` (inside its namespace) the way the storage controller does.
pub fn serve(veth: &Veth, spec: &ExportSpec<'_>) -> Result<Target, String> {
    let backend = Backend::open(spec.backing)
        .map_err(|e| format!("backing {}: {e}", spec.backing.display()))?;
    let socket = in_ns(&veth.ns, || PacketSocket::open(&veth.inner))?
        .map_err(|e| format!("packet socket on {}: {e}", veth.inner))?;
    let cfg = TargetConfig {
        shelf: spec.shelf,
        slot: spec.slot,
        acl: AccessControl {
            mask: spec.allowed.clone(),
            reserve: Vec::new(),
            remote_edit: false,
        },
        ..TargetConfig::default()
    };
    Target::start(socket, backend, cfg)
        .map_err(|e| format!("export e{}.{}: {e}", spec.shelf, spec.slot))
}

/// The Linux driver's block device for shelf.slot.
pub fn etherd_device(shelf: u16, slot: u8) -> String {
    format!("/dev/etherd/e{shelf}.{slot}")
}

/// Asks the Linux driver to broadcast a Query Config on its interfaces.
pub fn discover() -> Result<(), String> {
    std::fs::write("/dev/etherd/discover", b"\n").map_err(|e| format!("/dev/etherd/discover: {e}"))
}

/// Polls `done` every 50 ms for up to `timeout`; whether it came true.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks the Linux driver to discover once a second until `done` holds, for up to `timeout`;
/// whether it came true.
pub fn discover_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<bool, String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        discover()?;
        if wait_until(Duration::from_secs(1), &mut done) {
            return Ok(true);
        }
    }
    Ok(done())
}
