//! Exponential back-off with jitter, the one every hexidian crate uses (reconnect loops of
//! the OMM link, the GURU3 websocket and PostgreSQL; the broker's retry and probe delays).
//!
//! Sans-IO: it only computes delays and reads no clock; the caller sleeps. Each delay is
//! uniformly random in `[cap/2, cap]`, where `cap` starts at `base` and doubles per attempt up
//! to `max`, so that many clients that lost the same peer do not come back in step.
//!
//! ```
//! use std::time::Duration;
//! let mut b = exp_backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
//! let first = b.next_delay();
//! assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
//! b.reset(); // after a success
//! ```
#![warn(missing_docs)]

use std::time::Duration;

/// A back-off sequence: [`next_delay`](Self::next_delay) after each failure,
/// [`reset`](Self::reset) after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start around `base` and double up to `max` (at least `base`).
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The delay before the next attempt; each call doubles the next one's cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(self.base, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Failures since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over at `base` (call after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The delay before retry number `attempt` (0 = the first retry) without keeping a sequence:
/// uniform in `[cap/2, cap]` with `cap = min(base · 2^attempt, max)`.
pub fn delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = base
        .saturating_mul(1u32 << attempt.min(20))
        .min(max.max(base));
    let half = cap / 2;
    // float rounding may make the jitter a little larger than `half`: bounded, never a panic
    let jitter = Duration::try_from_secs_f64(half.as_secs_f64() * unit())
        .unwrap_or(half)
        .min(half);
    half.saturating_add(jitter).min(cap)
}

/// A uniform random number in `[0, 1]` (0.5 if the system has no randomness to give).
fn unit() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(500) && d[0] <= Duration::from_secs(1));
        assert!(d[3] >= Duration::from_secs(4) && d[3] <= Duration::from_secs(8));
        assert!(d[9] >= Duration::from_secs(30) && d[9] <= Duration::from_secs(60));
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn delays_are_not_all_alike() {
        let d: std::collections::BTreeSet<_> = (0..20)
            .map(|_| delay(Duration::from_secs(8), Duration::from_secs(8), 0))
            .collect();
        assert!(d.len() > 1, "no jitter: {d:?}");
    }

    #[test]
    fn huge_attempts_and_a_max_below_base_stay_bounded() {
        let d = delay(Duration::from_secs(2), Duration::from_secs(1), u32::MAX);
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
        // no overflow where base · 2^attempt cannot be represented
        let huge = Duration::from_secs(u64::MAX / 4);
        let d = delay(huge, Duration::MAX, 30);
        assert!(d >= Duration::MAX / 2 && d <= Duration::MAX, "{d:?}");
        let d = delay(Duration::from_secs(1), Duration::from_secs(30), 30);
        assert!(d >= Duration::from_secs(15) && d <= Duration::from_secs(30));
    }
}
