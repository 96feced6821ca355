//! Retransmission timeout from measured round trips (RFC 6298 smoothing and backoff). The
//! caller applies Karn's rule (see `exchange`: only frames answered on their first
//! transmission are sampled).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    initial: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    pub fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            initial,
            min,
            max,
        }
    }

    /// Folds one measured round trip into the estimate.
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// Timeout for a first transmission.
    pub fn rto(&self) -> Duration {
        match self.srtt {
            None => self.initial,
            Some(srtt) => (srtt + self.rttvar * 4).clamp(self.min, self.max),
        }
    }

    /// Timeout after `retries` retransmissions: doubled each time, capped at the maximum.
    pub fn backed_off(&self, retries: u32) -> Duration {
        let factor = 1u32 << retries.min(16);
        self.rto().saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_timeout_is_the_initial_value_until_sampled() {
        let r = RttEstimator::new(100 * MS, 5 * MS, 2000 * MS);
        assert_eq!(r.rto(), 100 * MS);
    }

    #[test]
    fn steady_samples_converge_and_respect_the_floor() {
        let mut r = RttEstimator::new(100 * MS, 5 * MS, 2000 * MS);
        for _ in 0..50 {
            r.sample(MS / 2);
        }
        assert_eq!(r.rto(), 5 * MS);
        for _ in 0..50 {
            r.sample(40 * MS);
        }
        assert!(r.rto() >= 40 * MS && r.rto() < 100 * MS, "{:?}", r.rto());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RttEstimator::new(100 * MS, 5 * MS, 1000 * MS);
        assert_eq!(r.backed_off(1), 200 * MS);
        assert_eq!(r.backed_off(3), 800 * MS);
        assert_eq!(r.backed_off(30), 1000 * MS);
    }
}
