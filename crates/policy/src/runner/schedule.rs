//! When the loop syncs, as a pure piece with the clock passed in (so it is tested without
//! waiting): a change is synced `debounce` after the first change of a burst (a burst of
//! events makes one sync, and a steady stream cannot put it off); nothing is synced before
//! every watch has listed once; a failed sync is retried with back-off (doubling from
//! `RETRY_FIRST` to `RETRY_MAX`); the kernel is checked every `resync`.

use std::time::{Duration, Instant};

use super::Due;

pub const RETRY_FIRST: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long the loop sleeps when nothing is due.
const IDLE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Schedule {
    debounce: Duration,
    resync: Duration,
    ready: bool,
    /// The first change not synced yet.
    pending_since: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    next_verify: Option<Instant>,
}

impl Schedule {
    pub fn new(debounce: Duration, resync: Duration) -> Schedule {
        Schedule {
            debounce,
            resync,
            ready: false,
            pending_since: None,
            retry_at: None,
            backoff: RETRY_FIRST,
            next_verify: None,
        }
    }

    pub fn changed(&mut self, now: Instant) {
        self.pending_since.get_or_insert(now);
    }

    fn sync_at(&self) -> Option<Instant> {
        if !self.ready {
            return None;
        }
        match (self.retry_at, self.pending_since) {
            (Some(retry), _) => Some(retry),
            (None, Some(since)) => Some(since + self.debounce),
            (None, None) => None,
        }
    }

    /// How long to sleep until something is due; `ready` once every watch has listed.
    pub fn wait(&mut self, now: Instant, ready: bool) -> Duration {
        self.ready = ready;
        [self.sync_at(), self.next_verify]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
            .unwrap_or(IDLE)
    }

    pub fn due(&self, now: Instant) -> Due {
        Due {
            sync: self.sync_at().is_some_and(|at| at <= now),
            verify: self.next_verify.is_some_and(|at| at <= now),
        }
    }

    /// After an attempt of what `due` said.
    pub fn done(&mut self, now: Instant, due: Due, ok: bool) {
        if ok {
            if due.sync {
                self.pending_since = None;
                self.retry_at = None;
                self.backoff = RETRY_FIRST;
            }
            if due.sync || due.verify {
                self.next_verify = Some(now + self.resync);
            }
        } else {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(RETRY_MAX);
            self.pending_since.get_or_insert(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_is_one_sync_after_the_debounce_from_its_first_change() {
        let t0 = Instant::now();
        let mut s = Schedule::new(5 * MS, Duration::from_secs(60));
        assert_eq!(s.wait(t0, true), IDLE);
        s.changed(t0);
        s.changed(t0 + 3 * MS);
        assert_eq!(s.wait(t0 + 3 * MS, true), 2 * MS);
        assert!(!s.due(t0 + 4 * MS).sync);
        let due = s.due(t0 + 5 * MS);
        assert!(due.sync);
        s.done(t0 + 6 * MS, due, true);
        assert!(!s.due(t0 + 7 * MS).sync);
        // The kernel is checked a resync period after the sync.
        assert_eq!(s.wait(t0 + 6 * MS, true), Duration::from_secs(60));
    }

    #[test]
    fn nothing_is_synced_before_every_list_is_in() {
        let t0 = Instant::now();
        let mut s = Schedule::new(5 * MS, Duration::from_secs(60));
        s.changed(t0);
        assert_eq!(s.wait(t0 + 10 * MS, false), IDLE);
        assert!(!s.due(t0 + 10 * MS).sync);
        assert_eq!(s.wait(t0 + 10 * MS, true), Duration::ZERO);
    }

    #[test]
    fn failures_are_retried_with_doubling_back_off_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut s = Schedule::new(MS, Duration::from_secs(60));
        s.changed(t0);
        s.wait(t0, true);
        let mut now = t0 + MS;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let due = s.due(now);
            assert!(due.sync);
            s.done(now, due, false);
            let wait = s.wait(now, true);
            waits.push(wait.as_millis());
            now += wait;
        }
        assert_eq!(
            waits,
            vec![100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        let due = s.due(now);
        s.done(now, due, true);
        s.changed(now);
        assert_eq!(s.wait(now, true), MS);
    }
}
