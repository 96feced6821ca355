//! Test scaffolding: a veth pair between two network namespaces created for one test (removed
//! on drop), running code inside a namespace, vblade as a child process, temp directories.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "`{name}` is not installed: run `just setup`");
}

/// Runs a command, failing the test with its stderr.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair: `a_if` lives in `a`, `b_if` in `b`.
pub struct NetPair {
    pub a: String,
    pub b: String,
    pub a_if: String,
    pub b_if: String,
}

impl NetPair {
    pub fn new(mtu: u32) -> Self {
        tool("ip");
        let id = unique();
        let pair = NetPair {
            a: format!("mallee-aoe-{id}-a"),
            b: format!("mallee-aoe-{id}-b"),
            a_if: format!("ma{id}a"),
            b_if: format!("ma{id}b"),
        };
        sh(&["ip", "netns", "add", &pair.a]);
        sh(&["ip", "netns", "add", &pair.b]);
        sh(&[
            "ip", "link", "add", &pair.a_if, "type", "veth", "peer", "name", &pair.b_if,
        ]);
        for (ns, ifname) in [(&pair.a, &pair.a_if), (&pair.b, &pair.b_if)] {
            sh(&["ip", "link", "set", ifname, "netns", ns]);
            sh(&[
                "ip",
                "-n",
                ns,
                "link",
                "set",
                ifname,
                "mtu",
                &mtu.to_string(),
                "up",
            ]);
        }
        pair
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it opens stay there.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}")).expect("open netns");
            // SAFETY: setns on a valid namespace fd affects only this (scoped) thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

/// vblade exporting `file` in namespace `ns`; killed on drop.
pub struct Vblade(Child);

impl Vblade {
    pub fn start(ns: &str, iface: &str, shelf: u16, slot: u8, file: &Path, sync: bool) -> Self {
        tool("vblade");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "vblade"]);
        if sync {
            cmd.arg("-s");
        }
        cmd.args([&shelf.to_string(), &slot.to_string(), iface])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Vblade(cmd.spawn().expect("spawn vblade"))
    }
}

impl Drop for Vblade {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory under target/aoe-tests, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A sparse file of `len` bytes in this directory.
    pub fn file(&self, name: &str, len: u64) -> PathBuf {
        let path = self.0.join(name);
        File::create(&path).unwrap().set_len(len).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub use mallee_aoe::pattern::pattern;
