//! Instance supervision: one `mallee-vmm` per instance, started from a JSON config in the
//! instance's directory (`root.img` and `ephemeral0.img`, see [`super::instance_disks`];
//! `console.log`, the serial port; `api.sock`, the VMM's control socket; `vmm.log`). A launch fetches the
//! images through the cache, pins the kernel and ramdisk while the instance lives, and runs
//! the VMM on its own thread until it exits. A stop asks the VMM through its socket, then
//! kills it after a deadline. A VMM that exits on its own makes the instance `failed` with the
//! exit reason (a guest reset restarts it instead).

use super::images::{Cache, Fetch, ImageError, Pinned};
use super::instance_disks::{self as disks, InstanceDiskError};
use super::reconcile::{Action, Local};
use super::storage;
use crate::{info, reaper};
use mallee_proto::{InstanceReport, InstanceSpec, Observed};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("image {0} names no kernel (only kernel + ramdisk boot is supported)")]
    NoKernel(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("instance directory {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Disk(#[from] InstanceDiskError),
    #[error("cannot start mallee-vmm: {0}")]
    Spawn(std::io::Error),
}

/// Where instances live and what runs them.
pub struct Env {
    pub root: PathBuf,
    /// True when `root` is on the cache's file system (see [`storage::room_for_instances`]).
    pub disks_share_cache: bool,
    pub vmm: PathBuf,
    pub cache: Cache,
    pub fetch: Arc<dyn Fetch + Send + Sync>,
    pub stop_deadline: Duration,
}

struct Record {
    local: Local,
    target: Observed,
    reason: Option<String>,
    pid: Option<u32>,
    rebooting: bool,
    dir: PathBuf,
}

/// The node's instances; cheap to clone.
#[derive(Clone)]
pub struct Instances {
    env: Arc<Env>,
    table: Arc<Mutex<BTreeMap<String, Record>>>,
    changed: Arc<(Mutex<u64>, Condvar)>,
}

/// Why the VMM stopped, in words, from its exit status (see mallee-vmm's README) and the last
/// line it logged.
pub fn exit_reason(code: i32, last_log_line: &str) -> String {
    match code {
        0 => "the guest powered off".into(),
        1 => format!("mallee-vmm failed: {last_log_line}"),
        2 => "the guest reset".into(),
        3 => "mallee-vmm stopped through its API".into(),
        c if c > 128 => format!("mallee-vmm was killed by signal {}", c - 128),
        c => format!("mallee-vmm exited with status {c}"),
    }
}

/// The VMM's JSON config: `root.img` is the first disk (the guest's `/dev/vda`), the
/// ephemeral disk, when the instance type has one, the second (`/dev/vdb`, serial
/// `ephemeral0`).
pub fn vmm_config(
    spec: &InstanceSpec,
    dir: &Path,
    kernel: &Path,
    initrd: Option<&Path>,
) -> serde_json::Value {
    let mut disks = vec![format!("{},serial=root", dir.join(disks::ROOT).display())];
    if spec.ephemeral_gib > 0 {
        let path = dir.join(disks::EPHEMERAL);
        disks.push(format!(
            "{},serial={}",
            path.display(),
            disks::EPHEMERAL_LABEL
        ));
    }
    serde_json::json!({
        "kernel": kernel,
        "initrd": initrd,
        "cmdline": "console=ttyS0 root=/dev/vda",
        "mem": format!("{}M", spec.memory_mib),
        "vcpus": spec.vcpus,
        "disk": disks,
        "serial": dir.join("console.log"),
        "api_socket": dir.join("api.sock"),
    })
}

/// Asks a VMM to stop through its control socket.
fn api_shutdown(socket: &Path) -> std::io::Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"{\"op\":\"shutdown\"}\n")?;
    let mut reply = [0u8; 256];
    let _ = s.read(&mut reply);
    Ok(())
}

fn last_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().last().unwrap_or("").to_string()
}

impl Instances {
    pub fn new(env: Env) -> Instances {
        Instances {
            env: Arc::new(env),
            table: Arc::default(),
            changed: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes whoever waits in [`Instances::wait_change`].
    pub fn notify(&self) {
        let (m, cv) = &*self.changed;
        *m.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cv.notify_all();
    }

    /// Waits until something changed after `seen` or `timeout` passes; returns the counter.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let (m, cv) = &*self.changed;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = cv
            .wait_timeout_while(g, timeout, |n| *n == seen)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }

    pub fn cache(&self) -> &Cache {
        &self.env.cache
    }

    pub fn locals(&self) -> BTreeMap<String, Local> {
        self.lock()
            .iter()
            .map(|(k, r)| (k.clone(), r.local))
            .collect()
    }

    /// Every instance the node knows, for the report.
    pub fn report(&self) -> Vec<InstanceReport> {
        (self.lock().iter())
            .map(|(id, r)| InstanceReport {
                instance_id: id.clone(),
                state: r.local.state,
                reason: r.reason.clone(),
                reboot_count: r.local.reboot_count,
            })
            .collect()
    }

    /// Console files of the known instances.
    pub fn consoles(&self) -> Vec<(String, PathBuf)> {
        (self.lock().iter())
            .map(|(id, r)| (id.clone(), r.dir.join("console.log")))
            .collect()
    }

    /// Starts doing `action`.
    pub fn apply(&self, action: Action) {
        match action {
            Action::Launch(spec) => self.launch(*spec),
            Action::Stop(id, target) => self.stop(&id, target, false),
            Action::Reboot(id, count) => {
                if let Some(r) = self.lock().get_mut(&id) {
                    r.local.reboot_count = count;
                }
                self.stop(&id, Observed::Running, true);
            }
            Action::Forget(id) => {
                if let Some(r) = self.lock().remove(&id) {
                    let _ = std::fs::remove_dir_all(&r.dir);
                }
                self.notify();
            }
        }
    }

    fn set(&self, id: &str, f: impl FnOnce(&mut Record)) {
        if let Some(r) = self.lock().get_mut(id) {
            f(r);
        }
        self.notify();
    }

    fn launch(&self, spec: InstanceSpec) {
        let id = spec.instance_id.clone();
        let dir = self.env.root.join(&id);
        self.lock().insert(
            id.clone(),
            Record {
                local: Local {
                    state: Observed::Pending,
                    stopping: false,
                    reboot_count: spec.reboot_count,
                },
                target: Observed::Terminated,
                reason: None,
                pid: None,
                rebooting: false,
                dir,
            },
        );
        self.notify();
        info!("agent: launching {id}");
        let me = self.clone();
        std::thread::spawn(move || me.supervise(spec));
    }

    /// Fetches the images and lays out the instance directory; returns the config path and the
    /// pins to hold while the instance lives.
    fn prepare(
        &self,
        spec: &InstanceSpec,
        dir: &Path,
    ) -> Result<(PathBuf, Vec<Pinned>), LaunchError> {
        let io = |e| LaunchError::Io(dir.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let kref = (spec.kernel.as_ref())
            .ok_or_else(|| LaunchError::NoKernel(spec.image.image_id.clone()))?;
        let (cache, fetch) = (&self.env.cache, &*self.env.fetch);
        let kernel = cache.get(kref, fetch)?;
        let ramdisk = match &spec.ramdisk {
            Some(r) => Some(cache.get(r, fetch)?),
            None => None,
        };
        let root = cache.get(&spec.image, fetch)?;
        self.check_room(spec)?;
        disks::sparse_copy(&root.path, &dir.join(disks::ROOT)).map_err(io)?;
        drop(root);
        if spec.ephemeral_gib > 0 {
            disks::make_ephemeral(dir, spec.ephemeral_gib)?;
        }
        let cfg = vmm_config(
            spec,
            dir,
            &kernel.path,
            ramdisk.as_ref().map(|p| p.path.as_path()),
        );
        let path = dir.join("vmm.json");
        std::fs::write(&path, cfg.to_string()).map_err(io)?;
        Ok((
            path,
            [Some(kernel), ramdisk].into_iter().flatten().collect(),
        ))
    }

    /// Fails unless the instance's disks can be made in the room left for instances.
    fn check_room(&self, spec: &InstanceSpec) -> Result<(), LaunchError> {
        let root = &self.env.root;
        let avail = storage::available_bytes(root).map_err(|e| LaunchError::Io(root.clone(), e))?;
        let summary = self.env.cache.summary();
        let cache =
            (self.env.disks_share_cache).then_some((summary.budget_bytes, summary.used_bytes));
        let free = storage::room_for_instances(avail, cache);
        let needed = disks::creation_bytes(spec.image.size, spec.ephemeral_gib);
        Ok(disks::check_room(root, needed, free)?)
    }

    fn spawn_vmm(
        &self,
        cfg: &Path,
        dir: &Path,
    ) -> Result<(u32, std::sync::mpsc::Receiver<i32>), LaunchError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("vmm.log"))
            .map_err(|e| LaunchError::Io(dir.to_path_buf(), e))?;
        let err = log
            .try_clone()
            .map_err(|e| LaunchError::Io(dir.to_path_buf(), e))?;
        let _ = std::fs::remove_file(dir.join("api.sock"));
        let mut cmd = Command::new(&self.env.vmm);
        cmd.arg("--config")
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        reaper::spawn_watched(&mut cmd).map_err(LaunchError::Spawn)
    }

    /// The instance's whole life on the node, on its own thread.
    fn supervise(&self, spec: InstanceSpec) {
        let id = spec.instance_id.clone();
        let dir = self.env.root.join(&id);
        let started = Instant::now();
        let (cfg, _pins) = match self.prepare(&spec, &dir) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir); // nothing half-made stays behind
                return self.ended(&id, Some(e.to_string()));
            }
        };
        info!(
            "agent: {id} prepared in {} ms (image downloads so far: {})",
            started.elapsed().as_millis(),
            self.env.cache.downloads()
        );
        loop {
            if self.lock().get(&id).is_none_or(|r| r.local.stopping) {
                return self.ended(&id, None);
            }
            let (pid, exited) = match self.spawn_vmm(&cfg, &dir) {
                Ok(s) => s,
                Err(e) => return self.ended(&id, Some(e.to_string())),
            };
            info!("agent: {id} running, mallee-vmm pid {pid}");
            self.set(&id, |r| {
                r.pid = Some(pid);
                r.local.state = Observed::Running;
            });
            let code = exited.recv().unwrap_or(-1);
            info!("agent: {id} mallee-vmm exited with status {code}");
            let mut t = self.lock();
            let Some(r) = t.get_mut(&id) else { return };
            r.pid = None;
            if r.rebooting || (code == 2 && !r.local.stopping) {
                r.rebooting = false;
                r.local.stopping = false;
                continue;
            }
            let stopped = r.local.stopping;
            drop(t);
            let why = (!stopped).then(|| exit_reason(code, &last_line(&dir.join("vmm.log"))));
            return self.ended(&id, why);
        }
    }

    /// The instance is down: the stop target when a stop was asked for, else `failed`.
    fn ended(&self, id: &str, failure: Option<String>) {
        if crate::power::shutting_down() {
            // The node is going down: the VMM was stopped with everything else, the instance
            // did not fail. It stays as last reported; the frontend hears of the reboot.
            return info!("agent: {id} stopped by the node's shutdown");
        }
        if let Some(why) = &failure {
            info!("agent: {id} failed: {why}");
        }
        self.set(id, |r| {
            r.pid = None;
            match failure {
                Some(why) if !r.local.stopping => {
                    r.local.state = Observed::Failed;
                    r.reason = Some(why);
                }
                _ => r.local.state = r.target,
            }
            r.local.stopping = false;
            if r.local.state != Observed::Stopped {
                let _ = std::fs::remove_file(r.dir.join(disks::ROOT));
                let _ = std::fs::remove_file(r.dir.join(disks::EPHEMERAL));
                let _ = std::fs::remove_file(r.dir.join("api.sock"));
            }
        });
    }

    /// Asks the VMM to stop, then kills it after the deadline.
    fn stop(&self, id: &str, target: Observed, reboot: bool) {
        let (pid, socket) = {
            let mut t = self.lock();
            let Some(r) = t.get_mut(id) else { return };
            if reboot {
                r.rebooting = true;
            } else {
                r.local.stopping = true;
                r.target = target;
            }
            if r.pid.is_none() {
                // Not started yet: a reboot is moot; a stop is seen before the VMM starts.
                r.rebooting = false;
            }
            (r.pid, r.dir.join("api.sock"))
        };
        self.notify();
        let Some(pid) = pid else { return };
        info!("agent: stopping {id} (mallee-vmm pid {pid})");
        let (me, id, deadline) = (self.clone(), id.to_string(), self.env.stop_deadline);
        std::thread::spawn(move || {
            if let Err(e) = api_shutdown(&socket) {
                info!("agent: {id}: control socket: {e}");
            }
            let until = Instant::now() + deadline;
            while Instant::now() < until {
                if me.lock().get(&id).is_none_or(|r| r.pid != Some(pid)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            info!("agent: {id}: mallee-vmm did not stop in {deadline:?}; killing it");
            // SAFETY: kill(2) with a pid this process started and has not yet reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
    }
}

#[cfg(test)]
#[path = "instances_tests.rs"]
mod tests;
