//! The waiting line as the gateway serves it.
//!
//! - **Positions** are one subtraction: a place's number in its schedule's
//!   line minus the number the line is admitted through (`queue_lines`).
//! - **The polling policy** ([`PollPolicy`]) tells each holder how long to
//!   wait before asking again: longer the further back, never longer than
//!   half the expected wait, so a long line costs a bounded number of
//!   requests a second.
//! - **Pace**: a poll sooner than three quarters of the interval it was given
//!   is refused (429 with `Retry-After`). Each gateway keeps the pace of the
//!   tokens it answered in a bounded cache.
//! - **Long-polls** are held only for places at the front or expected within
//!   the wait, and wake when admission passes them (admission `NOTIFY`s
//!   `queue_admitted` with the number a line is admitted through).
//! - **Liveness**: every answer to a waiting place moves its `poll_deadline`
//!   on by its interval plus [`PollPolicy::abandon_after`]; a writer task
//!   records them many per statement. Admission drops places whose deadline
//!   passed: their holders left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use platform::db::QUEUE_ADMITTED_CHANNEL;

/// How often waiting clients should poll, and when a place is given up.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    /// Shortest interval (the front of the line).
    pub min: Duration,
    /// Longest interval (the back of a long line).
    pub max: Duration,
    /// Interval added per place between you and the front.
    pub per_place: Duration,
    /// Places at the front whose long-polls are held whatever the pace.
    pub front_places: i64,
    /// How long past its interval a waiting place is kept without a poll.
    pub abandon_after: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(20 * 60),
            per_place: Duration::from_millis(10),
            front_places: 100,
            abandon_after: Duration::from_secs(120),
        }
    }
}

impl PollPolicy {
    /// How long the holder of a place `position` back should wait before
    /// asking again, when the line moves `admit_rate` places a second: the
    /// per-place interval times the distance, at most half the expected
    /// wait, within [`PollPolicy::min`] and [`PollPolicy::max`].
    pub fn interval(&self, position: i64, admit_rate: f64) -> Duration {
        let position = position.max(1) as f64;
        let mut secs = position * self.per_place.as_secs_f64();
        if admit_rate > 0.0 {
            secs = secs.min(position / admit_rate / 2.0);
        }
        Duration::from_secs_f64(secs.clamp(self.min.as_secs_f64(), self.max.as_secs_f64()))
    }

    /// Whether a long-poll of `wait` is held for a place `position` back:
    /// it is at the front, or the line's pace should reach it within the
    /// wait. Others are answered at once, so held long-polls stay about as
    /// many as the places admitted in one wait.
    pub fn holds(&self, position: i64, admit_rate: f64, wait: Duration) -> bool {
        position <= self.front_places
            || (admit_rate > 0.0 && position as f64 / admit_rate <= wait.as_secs_f64())
    }
}

/// The gateway's view of the waiting lines; cheap to clone.
#[derive(Clone)]
pub struct QueueLines {
    inner: Arc<Inner>,
}

struct Inner {
    policy: PollPolicy,
    /// Per schedule, the number its line is admitted through, as notified.
    fronts: Mutex<HashMap<i64, watch::Sender<i64>>>,
    /// Per token, the earliest its next poll is answered.
    pace: Cache<Uuid, Instant>,
    /// Liveness to record: a token and the seconds its deadline moves on.
    alive: mpsc::Sender<(Uuid, f64)>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// The liveness writer's end; [`LivenessQueue::run`] drains it.
pub struct LivenessQueue {
    alive: mpsc::Receiver<(Uuid, f64)>,
}

/// Liveness updates that may wait for the writer; past it they are dropped
/// (the next poll records the place again).
const LIVENESS_QUEUE: usize = 100_000;
/// How often liveness is written.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

/// How a held long-poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Admission reached the place.
    Admitted,
    /// The wait ran out (or the gateway is shutting down).
    Waited,
    /// Not held: too many long-polls wait already.
    Refused,
}

/// Why a poll is refused: it came this long too soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSoon(pub Duration);

impl QueueLines {
    /// Lines polled under `policy`, tracking the pace of up to
    /// `pace_entries` tokens and holding up to `max_waiting` long-polls.
    pub fn new(
        policy: PollPolicy,
        pace_entries: usize,
        max_waiting: usize,
    ) -> (Self, LivenessQueue) {
        let (alive, rx) = mpsc::channel(LIVENESS_QUEUE);
        let inner = Inner {
            policy,
            fronts: Mutex::default(),
            pace: Cache::new(pace_entries.max(1)),
            alive,
            waiting: AtomicUsize::new(0),
            max_waiting,
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            LivenessQueue { alive: rx },
        )
    }

    /// The polling policy.
    pub fn policy(&self) -> &PollPolicy {
        &self.inner.policy
    }

    /// Refuses a poll of `token` that comes sooner than its pace allows.
    pub fn check_pace(&self, token: Uuid) -> Result<(), TooSoon> {
        match self.inner.pace.get(&token) {
            Some(at) if at > Instant::now() => Err(TooSoon(at - Instant::now())),
            _ => Ok(()),
        }
    }

    /// Records an answer to the holder of waiting `token`, asked to come back
    /// after `interval`: sets its pace (after a join or a held long-poll,
    /// `paced` is false: it may ask again at once) and moves its place's
    /// deadline on.
    pub fn answered(&self, token: Uuid, interval: Duration, paced: bool) {
        let earliest = if paced {
            interval * 3 / 4
        } else {
            Duration::ZERO
        };
        self.inner.pace.insert(token, Instant::now() + earliest);
        let keep = interval + self.inner.policy.abandon_after;
        if self
            .inner
            .alive
            .try_send((token, keep.as_secs_f64()))
            .is_err()
        {
            metrics::counter!("gateway_queue_liveness_dropped_total").increment(1);
        }
    }

    fn front(&self, schedule_id: i64) -> watch::Sender<i64> {
        let mut fronts = self.inner.fronts.lock().unwrap_or_else(|p| p.into_inner());
        fronts
            .entry(schedule_id)
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Moves schedule `schedule_id`'s known front to `through` (never back).
    pub fn admitted(&self, schedule_id: i64, through: i64) {
        self.front(schedule_id).send_if_modified(|front| {
            let moved = through > *front;
            *front = (*front).max(through);
            moved
        });
    }

    /// Waits up to `wait` (or until `stop` fires) for schedule
    /// `schedule_id`'s line to be admitted through place `line_no`, known
    /// admitted through `through` now.
    pub async fn wait_admitted(
        &self,
        schedule_id: i64,
        line_no: i64,
        through: i64,
        wait: Duration,
        stop: &CancellationToken,
    ) -> Held {
        let inner = &self.inner;
        if inner.waiting.fetch_add(1, Ordering::SeqCst) >= inner.max_waiting {
            inner.waiting.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!("gateway_queue_long_polls_refused_total").increment(1);
            return Held::Refused;
        }
        let _waiting = Waiting(&inner.waiting);
        metrics::gauge!("gateway_queue_long_polls_waiting").increment(1.0);
        // What the database said counts as notified: a notification that
        // came between the read and now is in the sender already.
        self.admitted(schedule_id, through);
        let mut front = self.front(schedule_id).subscribe();
        tokio::select! {
            passed = tokio::time::timeout(wait, front.wait_for(|f| *f >= line_no)) => {
                if matches!(passed, Ok(Ok(_))) { Held::Admitted } else { Held::Waited }
            }
            _ = stop.cancelled() => Held::Waited,
        }
    }

    /// Listens for admissions until `cancel` fires (a lost notification
    /// only lets a long-poll run its time).
    pub async fn listen(self, pool: PgPool, cancel: CancellationToken) {
        platform::db::listen(&pool, QUEUE_ADMITTED_CHANNEL, &cancel, |payload| {
            let parsed = payload
                .split_once(':')
                .and_then(|(s, t)| Some((s.parse::<i64>().ok()?, t.parse::<i64>().ok()?)));
            if let Some((schedule_id, through)) = parsed {
                self.admitted(schedule_id, through);
            }
        })
        .await;
    }
}

/// Counts a held long-poll while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("gateway_queue_long_polls_waiting").decrement(1.0);
    }
}

impl LivenessQueue {
    /// Writes liveness once a second until `cancel` fires.
    pub async fn run(mut self, pool: PgPool, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(LIVENESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut keep: HashMap<Uuid, f64> = HashMap::new();
            while let Ok((token, secs)) = self.alive.try_recv() {
                let entry = keep.entry(token).or_insert(secs);
                *entry = entry.max(secs);
            }
            if keep.is_empty() {
                continue;
            }
            let (tokens, secs): (Vec<Uuid>, Vec<f64>) = keep.into_iter().unzip();
            if let Err(error) = record_liveness(&pool, &tokens, &secs).await {
                tracing::warn!(%error, places = tokens.len(), "recording queue liveness failed");
            }
        }
    }
}

/// Moves the deadlines of the waiting places of `tokens` to now plus their
/// `secs`. Rows admission holds right now are skipped: they are being
/// admitted, and a lock wait here could only slow admission down.
async fn record_liveness(pool: &PgPool, tokens: &[Uuid], secs: &[f64]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE reservation_queue q
         SET poll_deadline = greatest(q.poll_deadline, now() + make_interval(secs => t.secs))
         FROM UNNEST($1::uuid[], $2::float8[]) AS t(token, secs)
         WHERE q.token = t.token
           AND q.id IN (SELECT id FROM reservation_queue
                        WHERE token = ANY($1) AND status = 'WAITING' FOR UPDATE SKIP LOCKED)",
        tokens,
        secs
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_grow_with_the_distance_and_stay_under_half_the_wait() {
        let policy = PollPolicy::default();
        assert_eq!(policy.interval(1, 0.0), Duration::from_secs(1));
        assert_eq!(policy.interval(10_000, 0.0), Duration::from_secs(100));
        assert_eq!(policy.interval(10_000_000, 0.0), policy.max);
        // A line that moves 1,000 places a second reaches place 100,000 in
        // 100 s: ask again within 50 s.
        assert_eq!(policy.interval(100_000, 1_000.0), Duration::from_secs(50));
        assert_eq!(policy.interval(100, 1_000.0), policy.min);
    }

    #[test]
    fn long_polls_are_held_at_the_front_or_within_reach() {
        let policy = PollPolicy::default();
        let wait = Duration::from_secs(30);
        assert!(policy.holds(100, 0.0, wait));
        assert!(!policy.holds(101, 0.0, wait));
        assert!(policy.holds(3_000, 100.0, wait));
        assert!(!policy.holds(3_001, 100.0, wait));
    }

    #[test]
    fn a_poll_sooner_than_its_pace_is_refused() {
        let (lines, _liveness) = QueueLines::new(PollPolicy::default(), 10, 10);
        let token = Uuid::now_v7();
        assert_eq!(lines.check_pace(token), Ok(()));
        lines.answered(token, Duration::from_secs(8), true);
        let TooSoon(left) = lines.check_pace(token).expect_err("too soon");
        assert!(left > Duration::from_secs(5) && left <= Duration::from_secs(6));
        lines.answered(token, Duration::from_secs(8), false);
        assert_eq!(lines.check_pace(token), Ok(()));
    }
}
