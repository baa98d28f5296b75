//! Bounded exponential back-off with jitter, for retrying API and kernel operations without
//! ever spinning.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`, each with ±20 % jitter so that many agents
/// restarted together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// `initial` is raised to at least 10 ms and `max` to at least `initial`, so the delay is
    /// never zero.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(10));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay to wait; each call doubles the following one, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let factor = rand::rng().random_range(0.8..=1.2);
        base.mul_f64(factor).min(self.max)
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(80) && delays[0] <= Duration::from_millis(120));
        assert!(delays[1] >= Duration::from_millis(160) && delays[1] <= Duration::from_millis(240));
        for d in &delays {
            assert!(*d <= Duration::from_secs(1), "{d:?}");
            assert!(*d >= Duration::from_millis(80), "{d:?}");
        }
        assert!(delays[7] >= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn never_zero() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert!(b.next_delay() >= Duration::from_millis(8));
    }
}
