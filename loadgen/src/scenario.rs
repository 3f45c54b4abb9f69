//! The scenarios: a seed step that creates their own catalogue and users,
//! and the request each client sends.

use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use futures::stream::{self, StreamExt, TryStreamExt};
use schemas::requests::MAX_CHARGE_AMOUNT;
use serde_json::{json, Value};
use testkit::api::User;
use testkit::Api;
use uuid::Uuid;

use crate::report::Sample;
use crate::{Cli, ScenarioName};

/// A seeded scenario.
pub struct Scenario {
    /// Which one.
    pub name: ScenarioName,
    /// Users with, where needed, their ACTIVE queue token.
    pub users: Vec<(User, String)>,
    /// Seats to hold (rush: the seats of one schedule; booking: one per request).
    pub seats: Vec<i64>,
    /// The schedule of the seats.
    pub schedule_id: i64,
    /// Hot stocks (shop).
    pub hot: Vec<i64>,
    /// Cold stocks (shop).
    pub cold: Vec<i64>,
}

async fn users(
    api: &Api,
    n: usize,
    balance: i64,
    schedule: Option<i64>,
) -> anyhow::Result<Vec<(User, String)>> {
    stream::iter(0..n)
        .map(|i| async move {
            let user = api.create_user(&format!("load{i}")).await?;
            if balance > 0 {
                let id = api.charge(&user, balance.min(MAX_CHARGE_AMOUNT)).await?;
                api.outcome(&user.token, id).await?;
            }
            let token = match schedule {
                Some(schedule_id) => {
                    let token = api.join_queue(&user, schedule_id).await?;
                    api.wait_active(&user, &token).await?;
                    token
                }
                None => String::new(),
            };
            anyhow::Ok((user, token))
        })
        .buffer_unordered(64)
        .try_collect()
        .await
}

impl Scenario {
    /// Creates what the scenario needs through the gateway.
    pub async fn seed(cli: &Cli, api: &Api) -> anyhow::Result<Self> {
        let mut scenario = Scenario {
            name: cli.scenario,
            users: Vec::new(),
            seats: Vec::new(),
            schedule_id: 0,
            hot: Vec::new(),
            cold: Vec::new(),
        };
        match cli.scenario {
            ScenarioName::Charge => {
                scenario.users = users(api, cli.users, 0, None).await?;
            }
            ScenarioName::Rush => {
                scenario.schedule_id = api.create_schedule(cli.seats, 1_000).await?;
                scenario.seats = api.seat_ids(scenario.schedule_id).await?;
                scenario.users =
                    users(api, cli.requests as usize, 0, Some(scenario.schedule_id)).await?;
            }
            ScenarioName::Booking => {
                let seats = i32::try_from(cli.requests.min(10_000)).unwrap_or(10_000);
                scenario.schedule_id = api.create_schedule(seats, 1_000).await?;
                scenario.seats = api.seat_ids(scenario.schedule_id).await?;
                // A payment expires its queue token, so every hold-then-pay
                // pair gets its own user and token.
                scenario.users =
                    users(api, scenario.seats.len(), 1_000, Some(scenario.schedule_id)).await?;
            }
            ScenarioName::Shop => {
                for i in 0..3 {
                    let stock = i32::try_from(cli.requests).unwrap_or(i32::MAX) / 2;
                    let (_, ids) = api
                        .create_product(&format!("hot{i}"), "hot", 1_000, &[("F", stock)])
                        .await?;
                    scenario.hot.extend(ids);
                }
                for i in 0..20 {
                    let (_, ids) = api
                        .create_product(&format!("cold{i}"), "cold", 500, &[("F", 100_000)])
                        .await?;
                    scenario.cold.extend(ids);
                }
                scenario.users = users(api, cli.users, 5_000_000, None).await?;
            }
        }
        Ok(scenario)
    }

    /// Requests a fixed-count run sends.
    pub fn request_count(&self, cli: &Cli) -> u64 {
        match self.name {
            ScenarioName::Rush => self.users.len() as u64,
            ScenarioName::Booking => cli.requests.min(self.seats.len() as u64),
            _ => cli.requests,
        }
    }

    /// Sends request `i` and follows it to its outcome. Each POST takes a
    /// slot of `posting` until its answer; latencies count from `due` (open
    /// loop) or from when the first POST got its slot.
    pub async fn run_one(
        &self,
        api: &Api,
        posting: &Semaphore,
        i: u64,
        started: Instant,
        due: Option<Instant>,
    ) -> Sample {
        let n = self.users.len().max(1);
        let (user, token) = &self.users[i as usize % n];
        let Ok(slot) = posting.acquire().await else {
            return Sample::failed("ERROR");
        };
        let sent = due.unwrap_or_else(Instant::now);
        let first = match self.name {
            ScenarioName::Charge => {
                call(
                    api,
                    &format!("/v1/users/{}/balance/charge", user.id),
                    user,
                    None,
                    json!({"amount": 500}),
                )
                .await
            }
            ScenarioName::Rush | ScenarioName::Booking => {
                // A rush scatters users over few seats; a booking takes the
                // seats in turn, one per pair.
                let stride = if self.name == ScenarioName::Rush {
                    7919
                } else {
                    1
                };
                let seat = self.seats[(i as usize * stride) % self.seats.len()];
                call(
                    api,
                    "/v1/reservations",
                    user,
                    Some(token),
                    json!({"seat_id": seat}),
                )
                .await
            }
            ScenarioName::Shop => {
                let hot = self.hot[i as usize % self.hot.len()];
                let cold = self.cold[(i as usize * 7) % self.cold.len()];
                let items = json!([{"product_stock_id": hot, "quantity": 1},
                                   {"product_stock_id": cold, "quantity": 1 + (i % 2)}]);
                call(api, "/v1/orders", user, None, json!({"items": items})).await
            }
        };
        drop(slot);
        let first = match first {
            Ok(accepted) => accepted,
            Err((code, refused)) => return Sample::failed(code).refused(refused),
        };
        let mut ids = vec![first.id];
        let mut refused = first.refused_503;
        let outcome = match follow(api, user, first.id).await {
            Ok(outcome) => outcome,
            Err(code) => return Sample::failed(code).with(ids, refused),
        };
        if self.name == ScenarioName::Booking && outcome["status"] == "SUCCEEDED" {
            // Hold won: pay for it; the pair completes with the payment.
            let reservation = outcome["result"]["reservation_id"].clone();
            let Ok(slot) = posting.acquire().await else {
                return Sample::failed("ERROR");
            };
            let paid = call(
                api,
                "/v1/payments",
                user,
                Some(token),
                json!({"reservation_id": reservation}),
            )
            .await;
            drop(slot);
            let paid = match paid {
                Ok(paid) => {
                    ids.push(paid.id);
                    refused += paid.refused_503;
                    follow(api, user, paid.id).await
                }
                Err((code, more)) => return Sample::failed(code).with(ids, refused + more),
            };
            return match paid {
                Ok(outcome) => {
                    Sample::decided(started, sent, first.at, code_of(&outcome)).with(ids, refused)
                }
                Err(code) => Sample::failed(code).with(ids, refused),
            };
        }
        Sample::decided(started, sent, first.at, code_of(&outcome)).with(ids, refused)
    }
}

fn code_of(outcome: &Value) -> String {
    match outcome["status"].as_str() {
        Some("SUCCEEDED") => "SUCCEEDED".into(),
        _ => outcome["error"]["code"]
            .as_str()
            .unwrap_or("UNKNOWN")
            .into(),
    }
}

/// A call the gateway accepted: when the 202 arrived, its request id, and
/// how many 503s came before it.
struct Accepted {
    at: Instant,
    id: Uuid,
    refused_503: u32,
}

/// POSTs, retrying while the client's patience lasts (503 after its
/// `Retry-After`, a key in progress, a connection cut off) under an
/// `Idempotency-Key` of its own, which makes every retry the same request.
/// An impatient client (`--patience-secs 0`, the benchmark's) sends no key
/// and never retries.
async fn call(
    api: &Api,
    path: &str,
    user: &User,
    queue_token: Option<&str>,
    body: Value,
) -> Result<Accepted, (String, u32)> {
    let key = Uuid::new_v4().to_string();
    let answer = api
        .send(|| {
            let mut request = api
                .http
                .post(api.url(path))
                .bearer_auth(&user.token)
                .json(&body);
            if !api.patience.is_zero() {
                request = request.header("Idempotency-Key", &key);
            }
            if let Some(token) = queue_token {
                request = request.header("X-Queue-Token", token);
            }
            request
        })
        .await
        .map_err(|_| ("ERROR".to_owned(), 0))?;
    let at = Instant::now();
    let refused_503 = answer.refused_503;
    let status = answer.response.status();
    if status != reqwest::StatusCode::ACCEPTED {
        return Err((format!("HTTP_{}", status.as_u16()), refused_503));
    }
    let body: Value = answer
        .response
        .json()
        .await
        .map_err(|_| ("ERROR".to_owned(), refused_503))?;
    let id = body["request_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(("ERROR".to_owned(), refused_503))?;
    Ok(Accepted {
        at,
        id,
        refused_503,
    })
}

/// Long-polls the outcome of `id` (through gateway restarts and outages,
/// while the client's patience lasts for each poll).
async fn follow(api: &Api, user: &User, id: Uuid) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(120).max(api.patience * 2);
    loop {
        let path = format!("/v1/requests/{id}?wait_ms=10000");
        let answer = api
            .send(|| api.http.get(api.url(&path)).bearer_auth(&user.token))
            .await
            .map_err(|_| "ERROR".to_owned())?;
        let response = answer.response;
        if response.status() == reqwest::StatusCode::OK {
            let body: Value = response.json().await.map_err(|_| "ERROR".to_owned())?;
            if body["status"] != "PENDING" {
                return Ok(body);
            }
        } else if response.status() != reqwest::StatusCode::NOT_FOUND {
            return Err(format!("HTTP_{}", response.status().as_u16()));
        } else {
            // Accepted but its row not written yet: look again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if Instant::now() >= deadline {
            return Err("NO_OUTCOME".into());
        }
    }
}
