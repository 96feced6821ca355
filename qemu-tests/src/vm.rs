//! One QEMU virtual machine under TCG: its command line, its console, its lifetime.
//!
//! Nodes that run instances get `-cpu qemu64,+svm,+npt`, which gives them a working `/dev/kvm`
//! (nested KVM under TCG, as measured in DESIGN.md). The QEMU process is killed when the `Vm` is
//! dropped, and by the kernel if the test process dies first (`PR_SET_PDEATHSIG`).

use crate::console::{Console, ConsoleError};
use crate::images::NetbootImage;
use crate::segment::Segment;
use crate::testdir::TestDir;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("starting {binary}: {source}; run `just setup` to install QEMU")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("creating {path}: {source}")]
    Files {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP {command} on {path}: {reason}")]
    Qmp {
        command: String,
        path: String,
        reason: String,
    },
}

/// A network interface of the VM (virtio-net-pci unless `model` says otherwise).
#[derive(Debug, Clone)]
pub struct Nic {
    pub backend: NicBackend,
    pub mac: Option<String>,
    pub model: String,
    /// Let this NIC's option ROM (iPXE) network-boot the VM.
    pub boot: bool,
}

#[derive(Debug, Clone)]
pub enum NicBackend {
    /// QEMU user networking (slirp): DHCP at 10.0.2.2, `(host_port, guest_port)` TCP forwards
    /// bound to 127.0.0.1.
    User { forwards: Vec<(u16, u16)> },
    /// A private segment shared with other VMs of the same test.
    Segment(Segment),
    /// An existing tap device (`-netdev tap,ifname=...,script=no,downscript=no`); with
    /// [`VmConfig::netns`] it is looked up in that network namespace.
    Tap { ifname: String },
}

impl Nic {
    pub fn user() -> Self {
        Self::with(NicBackend::User {
            forwards: Vec::new(),
        })
    }

    pub fn user_forwarding(forwards: &[(u16, u16)]) -> Self {
        Self::with(NicBackend::User {
            forwards: forwards.to_vec(),
        })
    }

    pub fn segment(segment: &Segment) -> Self {
        Self::with(NicBackend::Segment(segment.clone()))
    }

    pub fn tap(ifname: &str) -> Self {
        Self::with(NicBackend::Tap {
            ifname: ifname.to_string(),
        })
    }

    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = Some(mac.to_string());
        self
    }

    pub fn model(mut self, model: &str) -> Self {
        self.model = model.to_string();
        self
    }

    pub fn boot(mut self) -> Self {
        self.boot = true;
        self
    }

    fn with(backend: NicBackend) -> Self {
        Self {
            backend,
            mac: None,
            model: "virtio-net-pci".into(),
            boot: false,
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub name: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub nested_kvm: bool,
    pub kernel: Option<NetbootImage>,
    /// Appended to the image's command line.
    pub extra_cmdline: String,
    pub nics: Vec<Nic>,
    pub disks: Vec<PathBuf>,
    pub extra_args: Vec<String>,
    /// Run QEMU inside this network namespace (`ip netns exec NAME`), e.g. to reach a tap
    /// device the test created there.
    pub netns: Option<String>,
    /// UEFI firmware (OVMF) to boot the first disk with, instead of `-kernel`.
    pub firmware: Option<PathBuf>,
}

/// Debian's `ovmf` package: UEFI firmware for QEMU.
pub const OVMF: &str = "/usr/share/qemu/OVMF.fd";

impl VmConfig {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            memory_mib: 1024,
            cpus: 1,
            nested_kvm: false,
            kernel: None,
            extra_cmdline: String::new(),
            nics: Vec::new(),
            disks: Vec::new(),
            extra_args: Vec::new(),
            netns: None,
            firmware: None,
        }
    }

    /// Boot `image` directly (`-kernel/-initrd/-append`).
    pub fn netboot(mut self, image: &NetbootImage) -> Self {
        self.kernel = Some(image.clone());
        self
    }

    /// Boot the first disk under UEFI firmware (OVMF), as a machine with the disk flashed in it.
    pub fn uefi(mut self) -> Self {
        self.firmware = Some(PathBuf::from(OVMF));
        self
    }

    pub fn cmdline(mut self, extra: &str) -> Self {
        if !self.extra_cmdline.is_empty() {
            self.extra_cmdline.push(' ');
        }
        self.extra_cmdline.push_str(extra);
        self
    }

    pub fn nested_kvm(mut self, on: bool) -> Self {
        self.nested_kvm = on;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    pub fn disk(mut self, path: PathBuf) -> Self {
        self.disks.push(path);
        self
    }

    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_string());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_string());
        self
    }

    /// The QEMU arguments for this VM, with its files placed in `dir`.
    pub fn qemu_args(&self, dir: &TestDir) -> Vec<String> {
        let name = &self.name;
        let cpu = if self.nested_kvm {
            "qemu64,+svm,+npt"
        } else {
            "qemu64"
        };
        let mut a: Vec<String> = [
            "-name",
            name,
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            cpu,
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-vga",
            "none",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["-m".into(), format!("{}M", self.memory_mib)]);
        a.extend(["-smp".into(), self.cpus.to_string()]);
        a.extend([
            "-chardev".into(),
            format!(
                "file,id=console,path={}",
                dir.file(&format!("{name}.console")).display()
            ),
            "-serial".into(),
            "chardev:console".into(),
            "-qmp".into(),
            format!(
                "unix:{},server=on,wait=off",
                dir.file(&format!("{name}.qmp")).display()
            ),
        ]);
        if let Some(image) = &self.kernel {
            let mut cmdline = image.cmdline.clone();
            if !self.extra_cmdline.is_empty() {
                cmdline.push(' ');
                cmdline.push_str(&self.extra_cmdline);
            }
            a.extend([
                "-kernel".into(),
                image.vmlinuz.display().to_string(),
                "-initrd".into(),
                image.initramfs.display().to_string(),
                "-append".into(),
                cmdline,
            ]);
        }
        for (i, nic) in self.nics.iter().enumerate() {
            let id = format!("net{i}");
            let netdev = match &nic.backend {
                NicBackend::User { forwards } => {
                    let mut s = format!("user,id={id}");
                    for (host, guest) in forwards {
                        s.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
                    }
                    s
                }
                NicBackend::Segment(seg) => seg.netdev_arg(&id),
                NicBackend::Tap { ifname } => {
                    format!("tap,id={id},ifname={ifname},script=no,downscript=no")
                }
            };
            a.extend(["-netdev".into(), netdev]);
            let mut device = format!("{},netdev={id}", nic.model);
            if let Some(mac) = &nic.mac {
                device.push_str(&format!(",mac={mac}"));
            }
            if nic.boot {
                device.push_str(",bootindex=1");
            } else {
                device.push_str(",romfile=");
            }
            a.extend(["-device".into(), device]);
            a.extend([
                "-object".into(),
                format!(
                    "filter-dump,id=dump{i},netdev={id},file={}",
                    dir.file(&format!("{name}-{id}.pcap")).display()
                ),
            ]);
        }
        if let Some(firmware) = &self.firmware {
            a.extend(["-bios".into(), firmware.display().to_string()]);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            let file = format!("file={},format=raw,cache=unsafe", disk.display());
            if self.firmware.is_some() {
                // The first disk is what the firmware boots, before any NIC.
                a.extend(["-drive".into(), format!("{file},if=none,id=disk{i}")]);
                let mut device = format!("virtio-blk-pci,drive=disk{i}");
                if i == 0 {
                    device.push_str(",bootindex=0");
                }
                a.extend(["-device".into(), device]);
            } else {
                a.extend(["-drive".into(), format!("{file},if=virtio,index={i}")]);
            }
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// Starts QEMU.
    pub fn launch(&self, dir: &TestDir) -> Result<Vm, VmError> {
        let qemu = std::env::var("MALLEE_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        let (binary, mut args) = match &self.netns {
            Some(ns) => (
                "ip".to_string(),
                vec!["netns".into(), "exec".into(), ns.clone(), qemu],
            ),
            None => (qemu, Vec::new()),
        };
        args.extend(self.qemu_args(dir));
        let log_path = dir.file(&format!("{}.qemu.log", self.name));
        let log = std::fs::File::create(&log_path).map_err(|source| VmError::Files {
            path: log_path.display().to_string(),
            source,
        })?;
        let console_path = dir.file(&format!("{}.console", self.name));
        std::fs::write(
            dir.file(&format!("{}.cmd", self.name)),
            format!("{binary} {}\n", shell_words(&args)),
        )
        .map_err(|source| VmError::Files {
            path: dir.path().display().to_string(),
            source,
        })?;
        let mut cmd = Command::new(&binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe; it touches no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(|source| VmError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        Ok(Vm {
            name: self.name.clone(),
            child,
            console: Console::new(&console_path),
            log: log_path,
            qmp: dir.file(&format!("{}.qmp", self.name)),
            started,
        })
    }
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || ",.:=/_+-".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running VM. Dropping it kills QEMU.
pub struct Vm {
    name: String,
    child: Child,
    console: Console,
    log: PathBuf,
    qmp: PathBuf,
    started: Instant,
}

impl Vm {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn console(&self) -> &Console {
        &self.console
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for `pattern` on the console; fails early (with QEMU's own log) if QEMU exits.
    pub fn wait_for(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ConsoleError> {
        let child = &mut self.child;
        let log = &self.log;
        self.console
            .wait_for_while(pattern, timeout, || match child.try_wait() {
                Ok(None) => Ok(()),
                Ok(Some(status)) => Err(format!(
                    "{status}; QEMU said: {}",
                    std::fs::read_to_string(log).unwrap_or_default().trim()
                )),
                Err(e) => Err(e.to_string()),
            })
    }

    /// Runs one QMP command without arguments (`system_reset`, `query-status`) on the VM's QMP
    /// socket; returns QEMU's `return` object as JSON text.
    pub fn qmp(&self, command: &str) -> Result<String, VmError> {
        self.qmp_with(command, &serde_json::json!({}))
    }

    /// Runs one QMP command with `arguments` (a JSON object); returns QEMU's answer line.
    pub fn qmp_with(
        &self,
        command: &str,
        arguments: &serde_json::Value,
    ) -> Result<String, VmError> {
        use std::io::{BufRead, BufReader, Write};
        let err = |reason: String| VmError::Qmp {
            command: command.to_string(),
            path: self.qmp.display().to_string(),
            reason,
        };
        let stream =
            std::os::unix::net::UnixStream::connect(&self.qmp).map_err(|e| err(e.to_string()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| err(e.to_string()))?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| err(e.to_string()))?);
        let mut writer = stream;
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| err(format!("greeting: {e}")))?;
        let capabilities = serde_json::json!({"execute": "qmp_capabilities"});
        let request = serde_json::json!({"execute": command, "arguments": arguments});
        for execute in [capabilities, request] {
            writeln!(writer, "{execute}").map_err(|e| err(e.to_string()))?;
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => return Err(err("QEMU closed the socket".into())),
                    Ok(_) if line.contains("\"return\"") => break,
                    Ok(_) if line.contains("\"error\"") => return Err(err(line.trim().into())),
                    Ok(_) => continue, // an event
                    Err(e) => return Err(err(e.to_string())),
                }
            }
        }
        Ok(line.trim().to_string())
    }

    /// From now on a guest reboot (or QMP `system_reset`) resets the machine, back through its
    /// firmware, instead of ending QEMU (what `-no-reboot` makes it do at launch).
    pub fn reset_on_reboot(&self) -> Result<(), VmError> {
        self.qmp_with("set-action", &serde_json::json!({"reboot": "reset"}))
            .map(drop)
    }

    /// Presses ctrl-alt-delete on the VM's PS/2 keyboard (Linux signals PID 1; mallee-init
    /// reboots cleanly).
    pub fn ctrl_alt_delete(&self) -> Result<(), VmError> {
        let keys: Vec<serde_json::Value> = ["ctrl", "alt", "delete"]
            .iter()
            .map(|k| serde_json::json!({"type": "qcode", "data": k}))
            .collect();
        self.qmp_with("send-key", &serde_json::json!({"keys": keys}))
            .map(drop)
    }

    /// Whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for QEMU to exit by itself (guest poweroff with `-no-reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
