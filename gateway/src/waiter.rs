//! Long-poll support. Lanes `NOTIFY request_outcomes` with what they
//! decided (the committed rows, see [`platform::db::outcome_payloads`]); one
//! listener per gateway keeps recent outcomes, and the requests this gateway
//! accepted, in a bounded cache and wakes the waiting clients. A long-poll
//! on a request the cache knows needs no database read at all: the cache
//! says whose it is, and the notification carries its outcome.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use platform::db::{parse_outcome_payload, RequestView};
use quick_cache::sync::Cache;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use platform::db::OUTCOME_CHANNEL;

/// Status of an accepted request before its outcome.
pub const PENDING: &str = "PENDING";

/// What the gateway knows of a request without reading it: a row of
/// `requests` as accepted (status PENDING) or as notified (decided).
pub type KnownRequest = Arc<RequestView>;

/// Registry of clients waiting for outcomes, and the cache of requests
/// known without a read.
#[derive(Clone)]
pub struct OutcomeWaiter {
    waiting: Arc<Mutex<Waiting>>,
    known: Option<Arc<Cache<Uuid, KnownRequest>>>,
    max_waiting: usize,
}

/// The long-polls waiting now, by request id.
#[derive(Default)]
struct Waiting {
    by_id: HashMap<Uuid, Arc<Notify>>,
    /// Long-polls in progress (several may wait on one id).
    count: usize,
}

impl Default for OutcomeWaiter {
    fn default() -> Self {
        Self::new(0, usize::MAX)
    }
}

/// A long-poll's registration. Dropping it (the answer was sent, or the
/// client went away and its handler was dropped) forgets the waiter, so an
/// abandoned long-poll leaves nothing behind.
pub struct Subscription {
    waiter: OutcomeWaiter,
    id: Uuid,
    notify: Arc<Notify>,
}

impl Subscription {
    /// Notified when the request may have an outcome.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut waiting = self.waiter.lock();
        waiting.count = waiting.count.saturating_sub(1);
        // Two references: the map's and this one.
        if Arc::strong_count(&self.notify) <= 2 {
            waiting.by_id.remove(&self.id);
        }
        metrics::gauge!("gateway_long_polls_waiting").set(waiting.count as f64);
    }
}

impl OutcomeWaiter {
    /// A waiter whose cache holds up to `cache_entries` requests (none
    /// when 0: every long-poll then reads the database), and that lets at
    /// most `max_waiting` long-polls wait at once.
    pub fn new(cache_entries: usize, max_waiting: usize) -> Self {
        Self {
            waiting: Arc::default(),
            known: (cache_entries > 0).then(|| Arc::new(Cache::new(cache_entries))),
            max_waiting,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a request this gateway has just had acknowledged, so the
    /// first long-poll on it can check access without a read. An outcome
    /// notified already is kept.
    pub fn accepted(&self, id: Uuid, request_type: &str, user_id: Option<i64>) {
        if let Some(known) = &self.known {
            let _ = known.get_or_insert_with(&id, || {
                Ok::<_, Infallible>(Arc::new(RequestView {
                    request_type: request_type.to_owned(),
                    user_id,
                    status: PENDING.to_owned(),
                    result: None,
                    error_code: None,
                    error_message: None,
                }))
            });
        }
    }

    /// What the cache knows of `id`: decided (final) or accepted here and
    /// not notified yet (PENDING, which a missed notification can make
    /// stale: trust it only as a reason to wait).
    pub fn known(&self, id: Uuid) -> Option<KnownRequest> {
        self.known.as_ref()?.get(&id)
    }

    /// Registers a long-poll on `id`; None when `max_waiting` long-polls
    /// wait already (the caller then answers at once, without waiting).
    pub fn subscribe(&self, id: Uuid) -> Option<Subscription> {
        let mut waiting = self.lock();
        if waiting.count >= self.max_waiting {
            metrics::counter!("gateway_long_polls_refused_total").increment(1);
            return None;
        }
        waiting.count += 1;
        metrics::gauge!("gateway_long_polls_waiting").set(waiting.count as f64);
        let notify = waiting.by_id.entry(id).or_default().clone();
        Some(Subscription {
            waiter: self.clone(),
            id,
            notify,
        })
    }

    fn wake(&self, payload: &str) {
        let notices = parse_outcome_payload(payload);
        // Cache first, then wake: a woken client finds the outcome. A bare
        // id (an outcome too large to notify, or an operator waking polls
        // after fixing rows) means "read the row": forget what was cached.
        if let Some(known) = &self.known {
            for notice in &notices {
                match &notice.outcome {
                    Some(outcome) => known.insert(notice.id, Arc::new(outcome.clone())),
                    None => {
                        known.remove(&notice.id);
                    }
                }
            }
        }
        let waiting = self.lock();
        if waiting.by_id.is_empty() {
            return;
        }
        for notice in &notices {
            if let Some(notify) = waiting.by_id.get(&notice.id) {
                notify.notify_waiters();
            }
        }
    }

    /// Listens for outcome notifications until `cancel` fires, reconnecting
    /// after failures. Long-polls also re-check the database periodically, so
    /// a lost notification only delays an answer.
    pub async fn run(self, pool: PgPool, cancel: CancellationToken) {
        platform::db::listen(&pool, OUTCOME_CHANNEL, &cancel, |payload| {
            self.wake(payload)
        })
        .await;
    }
}
