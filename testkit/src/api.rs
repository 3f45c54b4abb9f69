//! A small HTTP client of the gateway for tests and tools.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// A created user.
#[derive(Debug, Clone)]
pub struct User {
    /// User id.
    pub id: i64,
    /// Bearer credential.
    pub token: String,
}

/// Gateway client.
#[derive(Clone)]
pub struct Api {
    /// Base URL, for example `http://127.0.0.1:8080`.
    pub base: String,
    /// Admin credential.
    pub admin_token: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// How long a call keeps retrying what a client should retry: a 503
    /// (after its `Retry-After`), a `409 IDEMPOTENCY_KEY_IN_USE`, a
    /// connection refused or cut off. Zero (tests): never retry, so every
    /// answer is seen as it is.
    pub patience: Duration,
}

/// A response after retries, and how many 503s it took.
#[derive(Debug)]
pub struct Answer {
    /// The last response.
    pub response: Response,
    /// 503 answers seen (and retried) before it.
    pub refused_503: u32,
}

/// Longest wait between two attempts, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

impl Api {
    /// A client of the gateway at `base`.
    pub fn new(base: impl Into<String>, admin_token: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            base: base.into(),
            admin_token: admin_token.into(),
            http,
            patience: Duration::ZERO,
        }
    }

    /// The same client, retrying for up to `patience` (see [`Api::patience`]).
    pub fn patient(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Sends the request `make` builds, again and again while the answer is
    /// one to retry and patience lasts: 503 (waiting its `Retry-After`),
    /// `409` with `Retry-After` (a keyed call in progress), or no answer at
    /// all (refused, reset, timed out). Only calls that are safe to repeat
    /// may be sent this way: reads, and writes with an `Idempotency-Key`
    /// or whose repeat is harmless.
    pub async fn send(&self, make: impl Fn() -> reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut refused_503 = 0;
        let mut pause = Duration::from_millis(100);
        loop {
            let retry_in = match make().send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        refused_503 += 1;
                    }
                    let retryable = status == StatusCode::SERVICE_UNAVAILABLE
                        || (status == StatusCode::CONFLICT && retry_after.is_some());
                    if !retryable || tokio::time::Instant::now() >= deadline {
                        return Ok(Answer {
                            response,
                            refused_503,
                        });
                    }
                    retry_after.unwrap_or(Duration::from_secs(1))
                }
                Err(error) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(error.into());
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                    pause
                }
            };
            tokio::time::sleep(retry_in.min(MAX_RETRY_WAIT)).await;
        }
    }

    /// URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Body of a response as JSON, with the status.
    pub async fn read(response: Response) -> anyhow::Result<(StatusCode, Value)> {
        let status = response.status();
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?
        };
        Ok((status, body))
    }

    /// Creates a user named `name` with a unique email (a fresh one per
    /// attempt, so a retry after a lost answer cannot collide).
    pub async fn create_user(&self, name: &str) -> anyhow::Result<User> {
        let response = self
            .send(|| {
                let email = format!("{}-{}@example.com", name, Uuid::new_v4().simple());
                self.http
                    .post(self.url("/v1/users"))
                    .json(&json!({"name": name, "email": email}))
            })
            .await?
            .response;
        let (status, body) = Self::read(response).await?;
        if status != StatusCode::CREATED {
            bail!("create user: {status} {body}");
        }
        Ok(User {
            id: body["id"].as_i64().context("id")?,
            token: body["token"].as_str().context("token")?.to_owned(),
        })
    }

    /// Creates a concert with one schedule of `seats` seats at `price`;
    /// returns the schedule id.
    pub async fn create_schedule(&self, seats: i32, price: i64) -> anyhow::Result<i64> {
        let response = self
            .send(|| {
                self.http
                    .post(self.url("/v1/admin/concerts"))
                    .bearer_auth(&self.admin_token)
                    .json(&json!({"title": "Test concert", "schedules": [
                        {"starts_at": "2030-01-01T19:00:00Z", "seat_count": seats, "price": price}]}))
            })
            .await?
            .response;
        let (status, body) = Self::read(response).await?;
        if status != StatusCode::CREATED {
            bail!("create concert: {status} {body}");
        }
        body["schedules"][0]["id"].as_i64().context("schedule id")
    }

    /// Seat ids of a schedule, in seat order.
    pub async fn seat_ids(&self, schedule_id: i64) -> anyhow::Result<Vec<i64>> {
        let response = self
            .send(|| {
                self.http
                    .get(self.url(&format!("/v1/schedules/{schedule_id}/seats")))
            })
            .await?
            .response;
        let (status, body) = Self::read(response).await?;
        if status != StatusCode::OK {
            bail!("seats: {status} {body}");
        }
        Ok(body["items"]
            .as_array()
            .context("items")?
            .iter()
            .filter_map(|s| s["id"].as_i64())
            .collect())
    }

    /// Joins the queue of `schedule_id`; returns the token.
    pub async fn join_queue(&self, user: &User, schedule_id: i64) -> anyhow::Result<String> {
        // Joining again returns the same place in line: safe to repeat.
        let response = self
            .send(|| {
                self.http
                    .post(self.url("/v1/queue/tokens"))
                    .bearer_auth(&user.token)
                    .json(&json!({"schedule_id": schedule_id}))
            })
            .await?
            .response;
        let (status, body) = Self::read(response).await?;
        if !status.is_success() {
            bail!("join queue: {status} {body}");
        }
        Ok(body["token"].as_str().context("token")?.to_owned())
    }

    /// Status of a queue token.
    pub async fn queue_status(&self, user: &User, token: &str) -> anyhow::Result<Value> {
        let response = self
            .send(|| {
                self.http
                    .get(self.url(&format!("/v1/queue/tokens/{token}")))
                    .bearer_auth(&user.token)
            })
            .await?
            .response;
        let (status, body) = Self::read(response).await?;
        if status != StatusCode::OK {
            bail!("queue status: {status} {body}");
        }
        Ok(body)
    }

    /// Waits until `token` is ACTIVE.
    pub async fn wait_active(&self, user: &User, token: &str) -> anyhow::Result<()> {
        crate::eventually(
            "queue token to become ACTIVE",
            Duration::from_secs(30),
            || async {
                let body = self.queue_status(user, token).await?;
                Ok((body["status"] == "ACTIVE").then_some(()))
            },
        )
        .await
    }

    /// Posts `body` to `path` as `user` with optional extra headers; returns
    /// status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::read(request.send().await?).await
    }

    /// GETs `path` as `bearer`.
    pub async fn get(&self, path: &str, bearer: &str) -> anyhow::Result<(StatusCode, Value)> {
        let answer = self
            .send(|| self.http.get(self.url(path)).bearer_auth(bearer))
            .await?;
        Self::read(answer.response).await
    }

    /// Posts a state-changing call that must be accepted; returns the
    /// request id. A patient client sends it with an `Idempotency-Key`
    /// (its own, unless `headers` has one), so its retries are one request.
    pub async fn submit(
        &self,
        path: &str,
        bearer: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> anyhow::Result<Uuid> {
        Ok(self.submit_counting(path, bearer, headers, body).await?.0)
    }

    /// Like [`Api::submit`], also returning how many 503s came first.
    pub async fn submit_counting(
        &self,
        path: &str,
        bearer: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> anyhow::Result<(Uuid, u32)> {
        let own_key = Uuid::new_v4().to_string();
        let keyed = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"));
        let answer = self
            .send(|| {
                let mut request = self
                    .http
                    .post(self.url(path))
                    .bearer_auth(bearer)
                    .json(body);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                if !keyed && !self.patience.is_zero() {
                    request = request.header("Idempotency-Key", &own_key);
                }
                request
            })
            .await?;
        let refused = answer.refused_503;
        let (status, body) = Self::read(answer.response).await?;
        if status != StatusCode::ACCEPTED {
            bail!("{path}: expected 202, got {status} {body}");
        }
        Ok((
            Uuid::parse_str(body["request_id"].as_str().context("request_id")?)?,
            refused,
        ))
    }

    /// Charges `amount` to `user`; returns the request id.
    pub async fn charge(&self, user: &User, amount: i64) -> anyhow::Result<Uuid> {
        self.submit(
            &format!("/v1/users/{}/balance/charge", user.id),
            &user.token,
            &[],
            &json!({"amount": amount}),
        )
        .await
    }

    /// Requests a hold of `seat_id` with queue token `queue_token`.
    pub async fn hold(&self, user: &User, queue_token: &str, seat_id: i64) -> anyhow::Result<Uuid> {
        self.submit(
            "/v1/reservations",
            &user.token,
            &[("X-Queue-Token", queue_token)],
            &json!({"seat_id": seat_id}),
        )
        .await
    }

    /// Requests payment of `reservation_id`.
    pub async fn pay(
        &self,
        user: &User,
        queue_token: &str,
        reservation_id: i64,
    ) -> anyhow::Result<Uuid> {
        self.submit(
            "/v1/payments",
            &user.token,
            &[("X-Queue-Token", queue_token)],
            &json!({"reservation_id": reservation_id}),
        )
        .await
    }

    /// Waits for the final outcome of `request_id` (long-polling).
    pub async fn outcome(&self, bearer: &str, request_id: Uuid) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let (status, body) = self
                .get(&format!("/v1/requests/{request_id}?wait_ms=5000"), bearer)
                .await?;
            if status == StatusCode::OK && body["status"] != "PENDING" {
                return Ok(body);
            }
            if status != StatusCode::OK && status != StatusCode::NOT_FOUND {
                bail!("request {request_id}: {status} {body}");
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("request {request_id} has no outcome after 90 s: {body}");
            }
            if status == StatusCode::NOT_FOUND {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Creates a product with `(size, quantity)` stocks; returns the product
    /// id and the stock ids in the given order.
    pub async fn create_product(
        &self,
        name: &str,
        category: &str,
        price: i64,
        stocks: &[(&str, i32)],
    ) -> anyhow::Result<(i64, Vec<i64>)> {
        let stocks: Vec<Value> = stocks
            .iter()
            .map(|(size, quantity)| json!({"size": size, "quantity": quantity}))
            .collect();
        let body = json!({"name": name, "category": category, "price": price, "stocks": stocks});
        let response = self
            .send(|| {
                self.http
                    .post(self.url("/v1/admin/products"))
                    .bearer_auth(&self.admin_token)
                    .json(&body)
            })
            .await?
            .response;
        let (status, body) = Self::read(response).await?;
        if status != StatusCode::CREATED {
            bail!("create product: {status} {body}");
        }
        let ids = body["stocks"]
            .as_array()
            .context("stocks")?
            .iter()
            .filter_map(|s| s["id"].as_i64())
            .collect();
        Ok((body["id"].as_i64().context("id")?, ids))
    }

    /// Orders `(stock id, quantity)` lines for `user`; returns the request id.
    pub async fn order(&self, user: &User, lines: &[(i64, i32)]) -> anyhow::Result<Uuid> {
        let items: Vec<Value> = lines
            .iter()
            .map(|(stock, quantity)| json!({"product_stock_id": stock, "quantity": quantity}))
            .collect();
        self.submit("/v1/orders", &user.token, &[], &json!({"items": items}))
            .await
    }

    /// Balance of `user`.
    pub async fn balance(&self, user: &User) -> anyhow::Result<i64> {
        let (status, body) = self
            .get(&format!("/v1/users/{}/balance", user.id), &user.token)
            .await?;
        if status != StatusCode::OK {
            bail!("balance: {status} {body}");
        }
        body["balance"].as_i64().context("balance")
    }
}
