//! The retry policy: what a failed batch waits for, by its error's remedy.

use std::time::Duration;

use rand::Rng;

use crate::error::{LaneError, Remedy};

/// What to do after a batch failed.
pub(super) enum Next {
    /// Try the same batch again after this wait.
    Wait(Duration),
    /// The batch cannot commit as a whole: apply its records one by one.
    Isolate,
}

/// The waits of one batch's attempts: conflicts (serialization failures,
/// deadlocks) retry soon with jitter; an unavailable database backs off
/// exponentially; anything else isolates.
pub(super) struct Retry {
    lane: &'static str,
    conflicts: Backoff,
    outage: Backoff,
}

impl Retry {
    pub(super) fn new(lane: &'static str) -> Self {
        Self {
            lane,
            conflicts: Backoff::new(),
            outage: Backoff::new(),
        }
    }

    /// What to do after `error`.
    pub(super) fn after(&mut self, error: &LaneError) -> Next {
        match error.remedy() {
            Remedy::Retry => {
                // Serialization failures and deadlocks resolve by
                // themselves; retry the whole batch, never fail it.
                metrics::counter!("lane_retries_total", "lane" => self.lane, "reason" => "conflict")
                    .increment(1);
                tracing::debug!(%error, "conflict; retrying the batch");
                Next::Wait(self.conflicts.next_jittered())
            }
            Remedy::BackOff => {
                metrics::counter!("lane_retries_total", "lane" => self.lane, "reason" => "unavailable")
                    .increment(1);
                let wait = self.outage.next();
                tracing::warn!(%error, wait_ms = wait.as_millis() as u64, "database unavailable; backing off");
                Next::Wait(wait)
            }
            Remedy::Isolate => Next::Isolate,
        }
    }

    /// The next outage wait, for failures that isolation cannot help.
    pub(super) fn outage(&mut self) -> Duration {
        self.outage.next()
    }
}

/// Exponential backoff from 100 ms to 5 s.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Self {
            next: Duration::from_millis(100),
        }
    }

    pub(super) fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        now
    }

    /// A short random wait that grows with the attempts (5 ms to about
    /// 1 s), so batches that collided do not collide again in step.
    fn next_jittered(&mut self) -> Duration {
        let base = self.next() / 20;
        base + Duration::from_millis(rand::thread_rng().gen_range(0..20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let mut backoff = Backoff::new();
        let waits: Vec<u128> = (0..8).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn conflicts_wait_briefly_and_unavailability_backs_off() {
        let mut retry = Retry::new("test");
        let Next::Wait(wait) = retry.after(&LaneError::Conflict("deadlock".into())) else {
            panic!("a conflict is retried");
        };
        assert!(wait < Duration::from_millis(30), "{wait:?}");
        let refused = LaneError::Bug("broken".into());
        assert!(matches!(retry.after(&refused), Next::Isolate));
    }
}
