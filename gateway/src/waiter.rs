//! Long-poll support: lanes `NOTIFY request_outcomes` with the ids they
//! decided; one listener per gateway wakes the waiting clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use platform::db::OUTCOME_CHANNEL;

/// Registry of clients waiting for outcomes.
#[derive(Clone, Default)]
pub struct OutcomeWaiter {
    waiting: Arc<Mutex<HashMap<Uuid, Arc<Notify>>>>,
}

impl OutcomeWaiter {
    /// A handle that is notified when `id` may have an outcome. Drop it with
    /// [`OutcomeWaiter::forget`] when done.
    pub fn subscribe(&self, id: Uuid) -> Arc<Notify> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.entry(id).or_default().clone()
    }

    /// Stops tracking `id` once no client waits for it.
    pub fn forget(&self, id: Uuid, handle: Arc<Notify>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and the caller's.
        if Arc::strong_count(&handle) <= 2 {
            waiting.remove(&id);
        }
    }

    fn wake(&self, payload: &str) {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_empty() {
            return;
        }
        for id in payload
            .split(',')
            .filter_map(|s| Uuid::parse_str(s.trim()).ok())
        {
            if let Some(notify) = waiting.get(&id) {
                notify.notify_waiters();
            }
        }
    }

    /// Listens for outcome notifications until `cancel` fires, reconnecting
    /// after failures. Long-polls also re-check the database periodically, so
    /// a lost notification only delays an answer.
    pub async fn run(self, pool: PgPool, cancel: CancellationToken) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.listen(OUTCOME_CHANNEL).await?;
                loop {
                    let notification = listener.recv().await?;
                    self.wake(notification.payload());
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                result = listener => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "outcome listener failed; reconnecting");
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
