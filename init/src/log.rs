//! Console and kernel-log output of PID 1.
//!
//! Every line goes to `/dev/console` as `[    1.234] mallee-init: ...` (monotonic time since boot)
//! and to `/dev/kmsg` at debug level (`<15>`), so `dmesg` keeps a record without the kernel echoing
//! each line a second time onto the console (the /dev/kmsg rate limit is switched off). Before
//! devtmpfs is mounted neither device may exist; lines then go to stderr (the console the kernel
//! opened for us, if any). This module does not decide what is logged, only where and how.
//!
//! Init and the node agent log with `tracing`'s macros; [`install`] makes this module their
//! subscriber. Lines carry their level after the program name (`mallee-init: WARN ...`), except
//! info lines, which read as before; lines more detailed than the `mallee.log=` level
//! ([`set_level`], default info) are dropped. The kernel-log copies are all at debug priority,
//! so the kernel never echoes them onto the console a second time.

use mallee_proto::LogLevel;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

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

/// The most detailed level written, as `LogLevel as u8`.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

/// Lines more detailed than `level` are dropped from now on.
pub fn set_level(level: LogLevel) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

fn log_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        Level::TRACE => LogLevel::Trace,
    }
}

/// Formats one console line: `[SSSSS.mmm] mallee-init: [LEVEL ]MESSAGE`.
pub fn format_line(ms: u64, level: LogLevel, message: &str) -> String {
    let tag = match level {
        LogLevel::Info => "",
        LogLevel::Error => "ERROR ",
        LogLevel::Warn => "WARN ",
        LogLevel::Debug => "DEBUG ",
        LogLevel::Trace => "TRACE ",
    };
    format!(
        "[{:5}.{:03}] mallee-init: {tag}{message}\n",
        ms / 1000,
        ms % 1000
    )
}

/// Writes one line to the console and the kernel log. Never fails: a sink that cannot be written
/// is skipped, because PID 1 has nowhere else to report it.
pub fn line(level: LogLevel, message: &str) {
    let text = format_line(monotonic_ms(), level, message);
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
        let body = text.split_once("] ").map_or(text.as_str(), |(_, b)| b);
        let _ = kmsg.write_all(format!("<15>{body}").as_bytes());
    }
}

/// Collects an event's message and any other fields as ` name=value`.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// The `tracing` layer that writes events through [`line`].
struct ConsoleLayer;

impl<S: Subscriber> Layer<S> for ConsoleLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = log_level(event.metadata().level());
        if level as u8 > MAX_LEVEL.load(Ordering::Relaxed) {
            return;
        }
        let mut message = Message::default();
        event.record(&mut message);
        line(level, &message.0);
    }
}

/// Makes this module the process's `tracing` subscriber (once, first thing in `main`).
pub fn install() {
    let subscriber = tracing_subscriber::registry().with(ConsoleLayer);
    let _ = tracing::subscriber::set_global_default(subscriber);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_seconds_and_milliseconds_prefix_and_a_level_unless_info() {
        assert_eq!(
            format_line(1234, LogLevel::Info, "hi"),
            "[    1.234] mallee-init: hi\n"
        );
        assert_eq!(
            format_line(5, LogLevel::Warn, "x"),
            "[    0.005] mallee-init: WARN x\n"
        );
    }

    #[test]
    fn tracing_levels_map_onto_ours_in_the_same_order() {
        let ordered = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ];
        let ours: Vec<LogLevel> = ordered.iter().map(log_level).collect();
        assert_eq!(ours, LogLevel::ALL);
    }
}
