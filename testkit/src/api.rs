//! The gateway as tests and tools call it: the typed [`client::Client`] for
//! calls that follow the contract, with the steps tests repeat (a user, a
//! funded or admitted one, a schedule, a product, a hold, the outcomes of
//! many requests) and raw calls for tests of the HTTP surface itself (bad
//! input, headers, status codes).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use client::api::concert::{
    HoldSeat, JoinQueue, NewConcert, NewSchedule, PayReservation, QueueToken,
};
use client::api::shop::{NewProduct, NewStock, OrderLine, PlaceOrder};
use client::api::status::{QueueStatus, RequestStatus};
use client::api::users::{Charge, Login, NewUser, Session};
use client::api::RequestOutcome;
use client::{Client, Submit};
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use uuid::Uuid;

/// A created user: its id and bearer credential (and name and email).
pub use client::api::users::User;

/// A user admitted to a new schedule: where concert tests start.
pub struct Fan {
    /// The schedule.
    pub schedule_id: i64,
    /// Its seats, in seat order.
    pub seats: Vec<i64>,
    /// The user.
    pub user: User,
    /// The user's ACTIVE queue token for the schedule.
    pub token: String,
}

/// How many set-up calls (users, charges, outcomes) a step has in flight.
const IN_FLIGHT: usize = 32;

/// The stable code of a call the gateway refused; None for any other
/// failure.
pub fn refusal_code(error: &anyhow::Error) -> Option<&str> {
    match error.downcast_ref::<client::Error>()? {
        client::Error::Api { body, .. } => Some(&body.error.code),
        _ => None,
    }
}

/// Outcomes counted by `SUCCEEDED` or their error code.
pub fn codes(outcomes: &[RequestOutcome]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for outcome in outcomes {
        let key = match outcome.status {
            RequestStatus::Succeeded => "SUCCEEDED".to_owned(),
            _ => outcome.error_code().unwrap_or("?").to_owned(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Gateway client of a test or tool.
#[derive(Clone)]
pub struct Api {
    /// Base URL, for example `http://127.0.0.1:8080`.
    pub base: String,
    /// Admin credential.
    pub admin_token: String,
    /// HTTP client, for raw calls.
    pub http: reqwest::Client,
    /// The typed client, without a credential.
    pub client: Client,
}

impl Api {
    /// A client of the gateway at `base`, impatient: every answer is seen
    /// as it is.
    pub fn new(base: impl Into<String>, admin_token: impl Into<String>) -> Self {
        let base = base.into();
        let client = Client::new(&base);
        Self {
            http: client.http().clone(),
            base,
            admin_token: admin_token.into(),
            client,
        }
    }

    /// The same client, repeating what is safe to repeat for up to
    /// `patience` per call (see [`client`]).
    pub fn patient(mut self, patience: Duration) -> Self {
        self.client = self.client.patient(patience);
        self
    }

    /// How long a call keeps repeating.
    pub fn patience(&self) -> Duration {
        self.client.patience()
    }

    /// The typed client calling as `user`.
    pub fn as_user(&self, user: &User) -> Client {
        self.client.with_token(&user.token)
    }

    /// The typed client calling with `bearer`.
    pub fn with_token(&self, bearer: &str) -> Client {
        self.client.with_token(bearer)
    }

    /// The typed client calling as the admin.
    pub fn admin(&self) -> Client {
        self.client.with_token(&self.admin_token)
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

    /// Logs `email` in with `password`: a new credential.
    pub async fn login(&self, email: &str, password: &str) -> Result<Session, client::Error> {
        self.client
            .login(&Login {
                email: email.to_owned(),
                password: password.to_owned(),
            })
            .await
    }

    /// Signs up a user named `name` with a unique email and
    /// [`crate::TEST_PASSWORD`]. A new email per
    /// attempt: a repeat after a lost answer cannot collide with the user
    /// the lost attempt may have created.
    pub async fn create_user(&self, name: &str) -> anyhow::Result<User> {
        let deadline = tokio::time::Instant::now() + self.patience();
        loop {
            let user = NewUser {
                name: name.to_owned(),
                email: format!("{}-{}@example.com", name, Uuid::new_v4().simple()),
                password: crate::TEST_PASSWORD.to_owned(),
            };
            match self.client.create_user(&user).await {
                Err(client::Error::Transport(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                created => return created.context("create user"),
            }
        }
    }

    /// Creates a concert with one schedule of `seats` seats at `price`;
    /// returns the schedule id.
    pub async fn create_schedule(&self, seats: i32, price: i64) -> anyhow::Result<i64> {
        let concert = NewConcert {
            title: "Test concert".into(),
            schedules: vec![NewSchedule {
                starts_at: "2030-01-01T19:00:00Z".parse()?,
                seat_count: seats,
                price,
            }],
        };
        let created = self.admin().create_concert(&concert).await?;
        Ok(created.schedules.first().context("a schedule")?.id)
    }

    /// Seat ids of a schedule, in seat order.
    pub async fn seat_ids(&self, schedule_id: i64) -> anyhow::Result<Vec<i64>> {
        let seats = self.client.seats(schedule_id, &Default::default()).await?;
        Ok(seats.items.into_iter().map(|seat| seat.id).collect())
    }

    /// Joins the queue of `schedule_id`; returns the token as its
    /// `X-Queue-Token` header carries it.
    pub async fn join_queue(&self, user: &User, schedule_id: i64) -> anyhow::Result<String> {
        let joined = self
            .as_user(user)
            .join_queue(&JoinQueue { schedule_id })
            .await?;
        Ok(joined.token.to_string())
    }

    /// Waits until `token` is ACTIVE, polling as the gateway asks.
    pub async fn wait_active(&self, user: &User, token: &str) -> anyhow::Result<()> {
        let state = self
            .as_user(user)
            .wait_admitted(token.parse()?, Duration::from_secs(30))
            .await?;
        anyhow::ensure!(
            state.status == QueueStatus::Active,
            "queue token {token} is {:?}, not ACTIVE",
            state.status
        );
        Ok(())
    }

    /// Posts `body` to `path` as `bearer` with extra headers, once; returns
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

    /// GETs `path` as `bearer`, once.
    pub async fn get(&self, path: &str, bearer: &str) -> anyhow::Result<(StatusCode, Value)> {
        let request = self.http.get(self.url(path)).bearer_auth(bearer);
        Self::read(request.send().await?).await
    }

    /// Posts `body` to `path` as `user`, without extra headers, once.
    pub async fn post_as(
        &self,
        user: &User,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.post(path, Some(&user.token), &[], body).await
    }

    /// Posts `body` to `path` without a credential, once.
    pub async fn post_public(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.post(path, None, &[], body).await
    }

    /// GETs `path` without a credential, once.
    pub async fn get_public(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        Self::read(self.http.get(self.url(path)).send().await?).await
    }

    /// The gateway's `/metrics`, as Prometheus text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(self.url("/metrics"))
            .send()
            .await?
            .text()
            .await?)
    }

    /// Status of a queue token.
    pub async fn queue_status(&self, user: &User, token: &str) -> anyhow::Result<QueueToken> {
        Ok(self.as_user(user).queue_token(token.parse()?).await?)
    }

    /// Posts a state-changing call to `path` as `bearer` with `headers`
    /// (`X-Queue-Token`, `Idempotency-Key`) that must be accepted; returns
    /// the request id. A patient client adds a key of its own when
    /// `headers` has none, so its repeats are one request.
    pub async fn submit(
        &self,
        path: &str,
        bearer: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> anyhow::Result<Uuid> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, value)| *value)
        };
        let submit = Submit {
            queue_token: header("X-Queue-Token").map(str::parse).transpose()?,
            idempotency_key: header("Idempotency-Key"),
        };
        let accepted = self
            .with_token(bearer)
            .submit(path, Some(body), submit)
            .await
            .with_context(|| format!("{path}: expected 202"))?;
        Ok(accepted.request_id)
    }

    /// Charges `amount` to `user`; returns the request id.
    pub async fn charge(&self, user: &User, amount: i64) -> anyhow::Result<Uuid> {
        let charge = Charge { amount };
        Ok(self
            .as_user(user)
            .charge(user.id, &charge)
            .await?
            .request_id)
    }

    /// Requests a hold of `seat_id` with queue token `queue_token`.
    pub async fn hold(&self, user: &User, queue_token: &str, seat_id: i64) -> anyhow::Result<Uuid> {
        let hold = HoldSeat { seat_id };
        let queue_token = queue_token.parse()?;
        Ok(self
            .as_user(user)
            .hold(&hold, queue_token)
            .await?
            .request_id)
    }

    /// Requests payment of `reservation_id`.
    pub async fn pay(
        &self,
        user: &User,
        queue_token: &str,
        reservation_id: i64,
    ) -> anyhow::Result<Uuid> {
        let pay = PayReservation { reservation_id };
        let queue_token = queue_token.parse()?;
        Ok(self.as_user(user).pay(&pay, queue_token).await?.request_id)
    }

    /// Waits for the final outcome of `request_id` (long-polling, 90 s at
    /// most).
    pub async fn outcome(&self, bearer: &str, request_id: Uuid) -> anyhow::Result<RequestOutcome> {
        let client = self.with_token(bearer);
        Ok(client
            .wait_outcome_within(request_id, Duration::from_secs(90))
            .await?)
    }

    /// Waits for the outcome of `request_id` as `user`; fails unless it
    /// `SUCCEEDED`.
    pub async fn succeeded(&self, user: &User, request_id: Uuid) -> anyhow::Result<RequestOutcome> {
        let outcome = self.outcome(&user.token, request_id).await?;
        anyhow::ensure!(
            outcome.status == RequestStatus::Succeeded,
            "request {request_id} did not succeed: {outcome:?}"
        );
        Ok(outcome)
    }

    /// Final outcomes of `(bearer, request id)` pairs, in their order.
    pub async fn outcomes(
        &self,
        requests: &[(String, Uuid)],
    ) -> anyhow::Result<Vec<RequestOutcome>> {
        stream::iter(requests)
            .map(|(bearer, id)| self.outcome(bearer, *id))
            .buffered(2 * IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Submits `count` charges of `amount` to `user`, several at a time;
    /// returns their request ids.
    pub async fn charges(
        &self,
        user: &User,
        count: usize,
        amount: i64,
    ) -> anyhow::Result<Vec<Uuid>> {
        stream::iter(0..count)
            .map(|_| self.charge(user, amount))
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Charges `amount` to `user` and waits until the charge succeeded.
    pub async fn charged(&self, user: &User, amount: i64) -> anyhow::Result<()> {
        let id = self.charge(user, amount).await?;
        self.succeeded(user, id).await?;
        Ok(())
    }

    /// A new user with a balance of `balance`.
    pub async fn funded_user(&self, balance: i64) -> anyhow::Result<User> {
        let user = self.create_user("buyer").await?;
        self.charged(&user, balance).await?;
        Ok(user)
    }

    /// `count` new users, each with a balance of `balance`.
    pub async fn funded_users(&self, count: usize, balance: i64) -> anyhow::Result<Vec<User>> {
        stream::iter(0..count)
            .map(|_| self.funded_user(balance))
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await
    }

    /// `count` new users, each with a queue token of `schedule_id` that is
    /// ACTIVE: `(user, token)`.
    pub async fn admitted_users(
        &self,
        count: usize,
        schedule_id: i64,
    ) -> anyhow::Result<Vec<(User, String)>> {
        let users: Vec<(User, String)> = stream::iter(0..count)
            .map(|i| async move {
                let user = self.create_user(&format!("fan{i}")).await?;
                let token = self.join_queue(&user, schedule_id).await?;
                anyhow::Ok((user, token))
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        for (user, token) in &users {
            self.wait_active(user, token).await?;
        }
        Ok(users)
    }

    /// One new user with an ACTIVE queue token of `schedule_id`.
    pub async fn admitted_user(&self, schedule_id: i64) -> anyhow::Result<(User, String)> {
        let mut users = self.admitted_users(1, schedule_id).await?;
        users.pop().context("an admitted user")
    }

    /// A new schedule of `seats` seats at `price`, and a new user with a
    /// balance of `balance` (none when 0) admitted to it.
    pub async fn fan(&self, seats: i32, price: i64, balance: i64) -> anyhow::Result<Fan> {
        let schedule_id = self.create_schedule(seats, price).await?;
        let seats = self.seat_ids(schedule_id).await?;
        let (user, token) = self.admitted_user(schedule_id).await?;
        if balance > 0 {
            self.charged(&user, balance).await?;
        }
        Ok(Fan {
            schedule_id,
            seats,
            user,
            token,
        })
    }

    /// Holds `seat_id` for `user` and waits until the hold succeeded;
    /// returns the reservation id.
    pub async fn held(&self, user: &User, queue_token: &str, seat_id: i64) -> anyhow::Result<i64> {
        let id = self.hold(user, queue_token, seat_id).await?;
        let outcome = self.succeeded(user, id).await?;
        Ok(outcome.held().context("a hold result")?.reservation_id)
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
        let product = NewProduct {
            name: name.into(),
            category: category.into(),
            price,
            stocks: stocks
                .iter()
                .map(|(size, quantity)| NewStock {
                    size: (*size).into(),
                    quantity: *quantity,
                })
                .collect(),
        };
        let created = self.admin().create_product(&product).await?;
        Ok((
            created.id,
            created.stocks.into_iter().map(|s| s.id).collect(),
        ))
    }

    /// Orders `(stock id, quantity)` lines for `user`; returns the request id.
    pub async fn order(&self, user: &User, lines: &[(i64, i32)]) -> anyhow::Result<Uuid> {
        let order = PlaceOrder {
            items: lines
                .iter()
                .map(|(stock, quantity)| OrderLine {
                    product_stock_id: *stock,
                    quantity: *quantity,
                })
                .collect(),
        };
        Ok(self.as_user(user).order(&order).await?.request_id)
    }

    /// Balance of `user`.
    pub async fn balance(&self, user: &User) -> anyhow::Result<i64> {
        Ok(self.as_user(user).balance(user.id).await?.balance)
    }
}
