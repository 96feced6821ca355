//! Console and kernel-log output of PID 1.
//!
//! Every line goes to `/dev/console` as `[    1.234] mallee-init: ...` (monotonic time since boot)
//! and to `/dev/kmsg` at debug level (`<15>`), so `dmesg` keeps a record without the kernel echoing
//! each line a second time onto the console (the /dev/kmsg rate limit is switched off). Before
//! devtmpfs is mounted neither device may exist; lines then go to stderr (the console the kernel
//! opened for us, if any). This module does not decide what is logged, only where and how.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

struct Sinks {
    console: Option<File>,
    kmsg: Option<File>,
}

static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    console: None,
    kmsg: None,
});

/// Opens `/dev/console` and `/dev/kmsg` (after devtmpfs is mounted); missing devices are skipped.
/// Also lifts the kernel's /dev/kmsg rate limit (10 records per 5 s by default), which would
/// drop most boot lines; when `printk.devkmsg=` on the command line locked it, that choice stays.
pub fn open_sinks() {
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    let console = OpenOptions::new().write(true).open("/dev/console").ok();
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    sinks.console = console;
    sinks.kmsg = kmsg;
}

/// Milliseconds on `CLOCK_MONOTONIC` (time since boot, without suspend).
pub fn monotonic_ms() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Milliseconds on `CLOCK_BOOTTIME` (time since boot, including suspend).
pub fn boottime_ms() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Formats one console line: `[SSSSS.mmm] mallee-init: MESSAGE`.
pub fn format_line(ms: u64, message: &str) -> String {
    format!(
        "[{:5}.{:03}] mallee-init: {message}\n",
        ms / 1000,
        ms % 1000
    )
}

/// Writes one line to the console and the kernel log. Never fails: a sink that cannot be written
/// is skipped, because PID 1 has nowhere else to report it.
pub fn line(message: &str) {
    let text = format_line(monotonic_ms(), message);
    let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    match sinks.console.as_mut() {
        Some(console) => {
            let _ = console.write_all(text.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }
    if let Some(kmsg) = sinks.kmsg.as_mut() {
        // The kernel takes one record per write; `<15>` is facility user, level debug.
        let _ = kmsg.write_all(format!("<15>mallee-init: {message}\n").as_bytes());
    }
}

/// Returns a handle to `/dev/console` for a child's stdout/stderr, if the console is open.
pub fn console_handle() -> Option<File> {
    let sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    sinks.console.as_ref().and_then(|c| c.try_clone().ok())
}

/// The console as a child's stdout or stderr (inherited when there is no console).
pub fn console_stdio() -> std::process::Stdio {
    console_handle()
        .map(std::process::Stdio::from)
        .unwrap_or_else(std::process::Stdio::inherit)
}

/// `info!("...", args)` writes one formatted line through [`line`].
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::line(&format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_seconds_and_milliseconds_prefix() {
        assert_eq!(format_line(1234, "hi"), "[    1.234] mallee-init: hi\n");
        assert_eq!(format_line(5, "x"), "[    0.005] mallee-init: x\n");
    }
}
