//! The sign-in rate limit: failed sign-ins are counted per client address and per user name
//! over a sliding window; once either has [`MAX_FAILURES`] in the window, sign-ins from that
//! address or for that name are refused until the oldest failure leaves it. In memory only: a
//! restart forgets it, which costs an attacker a restart they cannot cause. Plain data and
//! times in, answers out; `console` asks it before checking a password.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Failures allowed per window, per address and per name.
pub const MAX_FAILURES: usize = 5;
/// The window.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
/// Keys kept before expired ones are swept (a bound on memory under a spray of names).
const SWEEP_AT: usize = 10_000;

/// A refused sign-in: how long until the next one may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    pub secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(String),
    Name(String),
}

/// Recent failed sign-ins.
#[derive(Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<Key, VecDeque<i64>>>,
}

impl SignInLimiter {
    /// Whether a sign-in from `addr` as `name` may be tried at `now_ms`.
    pub fn check(&self, addr: &str, name: &str, now_ms: i64) -> Result<(), RetryAfter> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = 0;
        for key in keys(addr, name) {
            if let Some(times) = failures.get_mut(&key) {
                expire(times, now_ms);
                if times.len() >= MAX_FAILURES {
                    let oldest = times[times.len() - MAX_FAILURES];
                    wait = wait.max(oldest + WINDOW_MS - now_ms);
                }
            }
        }
        match wait {
            0 => Ok(()),
            ms => Err(RetryAfter {
                secs: (ms + 999) / 1000,
            }),
        }
    }

    /// Counts a failed sign-in from `addr` as `name` at `now_ms`.
    pub fn failed(&self, addr: &str, name: &str, now_ms: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= SWEEP_AT {
            failures.retain(|_, times| {
                expire(times, now_ms);
                !times.is_empty()
            });
        }
        for key in keys(addr, name) {
            let times = failures.entry(key).or_default();
            expire(times, now_ms);
            times.push_back(now_ms);
        }
    }
}

fn keys(addr: &str, name: &str) -> [Key; 2] {
    [Key::Addr(addr.to_string()), Key::Name(name.to_string())]
}

fn expire(times: &mut VecDeque<i64>, now_ms: i64) {
    while times.front().is_some_and(|t| *t <= now_ms - WINDOW_MS) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail_times(l: &SignInLimiter, addr: &str, name: &str, n: usize, at: i64) {
        for _ in 0..n {
            l.failed(addr, name, at);
        }
    }

    #[test]
    fn the_sixth_try_after_five_failures_waits_out_the_window() {
        let l = SignInLimiter::default();
        fail_times(&l, "10.0.0.1", "alice", MAX_FAILURES - 1, 1_000);
        assert_eq!(l.check("10.0.0.1", "alice", 1_000), Ok(()));
        l.failed("10.0.0.1", "alice", 2_000);
        assert_eq!(
            l.check("10.0.0.1", "alice", 2_000),
            Err(RetryAfter { secs: 299 })
        );
        assert!(l.check("10.0.0.1", "alice", 1_000 + WINDOW_MS - 1).is_err());
        assert_eq!(l.check("10.0.0.1", "alice", 1_000 + WINDOW_MS), Ok(()));
    }

    #[test]
    fn failures_count_per_name_across_addresses_and_per_address_across_names() {
        let l = SignInLimiter::default();
        for i in 0..MAX_FAILURES {
            l.failed(&format!("10.0.0.{i}"), "alice", 0);
        }
        assert!(l.check("10.9.9.9", "alice", 1).is_err());
        assert_eq!(l.check("10.9.9.9", "bob", 1), Ok(()));
        for i in 0..MAX_FAILURES {
            l.failed("10.0.0.77", &format!("user{i}"), 0);
        }
        assert!(l.check("10.0.0.77", "carol", 1).is_err());
        assert_eq!(l.check("10.0.0.78", "carol", 1), Ok(()));
    }

    #[test]
    fn a_spray_of_names_is_swept_once_expired() {
        let l = SignInLimiter::default();
        for i in 0..SWEEP_AT {
            l.failed("10.0.0.1", &format!("n{i}"), 0);
        }
        l.failed("10.0.0.2", "late", WINDOW_MS + 1);
        let kept = l.failures.lock().unwrap().len();
        assert!(kept <= 2, "{kept} keys kept");
    }
}
