//! What the outbox relays report about events they may publish twice:
//! `outbox_in_flight_events` (sent in the current round, not confirmed)
//! and `outbox_unconfirmed_events_total` (events of rounds that ended
//! without their commit), read from every worker's `/metrics`. The
//! duplicate bound is the sum of the first at each fault plus the second
//! over the run (a restarted worker's counter starts again at 0: what it
//! had counted before is carried).

use std::collections::HashMap;
use std::time::Duration;

use crate::stack::{Stack, WORKERS};

/// The relays' counters as last read, per worker.
#[derive(Debug, Default)]
pub struct Relays {
    last: HashMap<usize, u64>,
    carried: u64,
}

/// The value of the sample `name` (no labels) in a Prometheus text page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
}

impl Relays {
    /// Reads every worker: the events their relays have in flight now (the
    /// sum), and their unconfirmed counters.
    pub async fn sample(&mut self, stack: &Stack) -> u64 {
        let mut in_flight = 0;
        for i in 0..WORKERS {
            let Some(page) = read(stack, i).await else {
                continue;
            };
            in_flight += metric(&page, "outbox_in_flight_events").unwrap_or(0.0) as u64;
            let now = metric(&page, "outbox_unconfirmed_events_total").unwrap_or(0.0) as u64;
            let last = self.last.entry(i).or_default();
            if now < *last {
                // Restarted since: its earlier count is gone from the page.
                self.carried += *last;
            }
            *last = now;
        }
        in_flight
    }

    /// Events of rounds that ended without their commit, over the run.
    pub async fn unconfirmed(&mut self, stack: &Stack) -> u64 {
        self.sample(stack).await;
        self.carried + self.last.values().sum::<u64>()
    }
}

async fn read(stack: &Stack, i: usize) -> Option<String> {
    let response = stack
        .api
        .http
        .get(stack.worker_url(i, "/metrics"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn a_metric_is_read_by_its_exact_name() {
        let page = "# TYPE outbox_in_flight_events gauge\n\
                    outbox_in_flight_events 12\n\
                    outbox_in_flight_events_max 99\n\
                    outbox_unconfirmed_events_total 3\n";
        assert_eq!(metric(page, "outbox_in_flight_events"), Some(12.0));
        assert_eq!(metric(page, "outbox_unconfirmed_events_total"), Some(3.0));
        assert_eq!(metric(page, "outbox_published_total"), None);
    }
}
