//! Per-export counters, updated lock-free by the worker threads and read by the frontend.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one export.
#[derive(Debug, Default)]
pub struct ExportStats {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    errors: AtomicU64,
    dropped_acl: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_by_hook: AtomicU64,
    dropped_duplicate: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frames addressed to this export and accepted for processing.
    pub frames_in: u64,
    /// Responses sent.
    pub frames_out: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests answered with an AoE or ATA error.
    pub errors: u64,
    /// Frames from MACs outside the mask list, dropped unanswered.
    pub dropped_acl: u64,
    /// Frames that did not parse, dropped unanswered.
    pub dropped_malformed: u64,
    /// Responses withheld by the loss test hook.
    pub dropped_by_hook: u64,
    /// Retransmitted requests dropped because the original is still being served.
    pub dropped_duplicate: u64,
}

impl ExportStats {
    pub fn frame_in(&self) {
        self.frames_in.fetch_add(1, Relaxed);
    }
    pub fn frame_out(&self) {
        self.frames_out.fetch_add(1, Relaxed);
    }
    pub fn read(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Relaxed);
    }
    pub fn written(&self, bytes: usize) {
        self.bytes_written.fetch_add(bytes as u64, Relaxed);
    }
    pub fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }
    pub fn drop_acl(&self) {
        self.dropped_acl.fetch_add(1, Relaxed);
    }
    pub fn drop_malformed(&self) {
        self.dropped_malformed.fetch_add(1, Relaxed);
    }
    pub fn drop_by_hook(&self) {
        self.dropped_by_hook.fetch_add(1, Relaxed);
    }

    pub fn drop_duplicate(&self) {
        self.dropped_duplicate.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            frames_in: self.frames_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            errors: self.errors.load(Relaxed),
            dropped_acl: self.dropped_acl.load(Relaxed),
            dropped_malformed: self.dropped_malformed.load(Relaxed),
            dropped_by_hook: self.dropped_by_hook.load(Relaxed),
            dropped_duplicate: self.dropped_duplicate.load(Relaxed),
        }
    }
}
