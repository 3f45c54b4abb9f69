//! Typed client of the gateway's HTTP API.
//!
//! Every call takes and returns the contract types of the [`api`] crate (the
//! same types the gateway serves and documents in `docs/openapi.json`), so a
//! change of the contract breaks the client's build, not its users at run
//! time.
//!
//! ```no_run
//! use client::{api, Client};
//!
//! # async fn demo() -> Result<(), client::Error> {
//! let gateway = Client::new("http://127.0.0.1:8080").patient(std::time::Duration::from_secs(30));
//! let user = gateway
//!     .create_user(&api::users::NewUser {
//!         name: "Ada".into(),
//!         email: "ada@example.com".into(),
//!         password: "correct horse battery staple".into(),
//!     })
//!     .await?;
//! let ada = gateway.with_token(&user.token);
//! let charge = ada.charge(user.id, &api::users::Charge { amount: 100_000 }).await?;
//! let outcome = ada.wait_outcome(charge.request_id).await?;
//! assert_eq!(outcome.status, api::status::RequestStatus::Succeeded);
//! # Ok(()) }
//! ```
//!
//! **Retries.** A client made [`Client::patient`] repeats, until its
//! patience runs out, what is safe to repeat: a `503` (after its
//! `Retry-After`; the gateway accepted nothing), a `409` with `Retry-After`
//! (a call with the same `Idempotency-Key` is in progress), and, for reads
//! and keyed or idempotent writes, a connection refused or cut off. Every
//! state-changing call of a patient client carries an `Idempotency-Key` of
//! its own, so a repeat is never a second request. An impatient client (the
//! default) sends every call once and shows every answer as it is.

#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

pub use api;
use api::concert::{
    Availability, CreatedConcert, HoldSeat, JoinQueue, NewConcert, PayReservation, Payment,
    QueueToken, Reservation, Schedule, Seat,
};
use api::shop::{
    Cart, DailyQuery, DailyStats, NewProduct, Order, PlaceOrder, Product, ProductFilter,
    SetQuantity, TopProducts, TopQuery,
};
use api::status::{QueueStatus, RequestStatus};
use api::users::{Balance, BalanceEntry, Charge, Login, NewUser, Session, User};
use api::{Accepted, Cursor, ErrorBody, Items, Paged, RequestOutcome};
use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway refused the call with the contract's error body.
    #[error("{status}: {} ({})", .body.error.code, .body.error.message)]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error body.
        body: ErrorBody,
    },
    /// An answer the contract does not describe for this call.
    #[error("unexpected answer {status}: {body}")]
    Unexpected {
        /// The HTTP status.
        status: StatusCode,
        /// The body as it came.
        body: String,
    },
    /// No answer: connection refused or cut off, timed out.
    #[error("no answer: {0}")]
    Transport(#[from] reqwest::Error),
    /// A request had no final outcome within the time the caller gave.
    #[error("request {request_id} had no outcome within {within:?}")]
    NoOutcome {
        /// The request.
        request_id: Uuid,
        /// How long the client waited.
        within: Duration,
    },
}

impl Error {
    /// The stable error code of a refusal (`SEAT_TAKEN` is an outcome, not a
    /// refusal: see [`RequestOutcome::error`]).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }

    /// The HTTP status of an answer that came.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } | Error::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A state-changing call the gateway accepted (`202`).
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The request id: follow it with [`Client::outcome`] or
    /// [`Client::wait_outcome`].
    pub request_id: Uuid,
    /// `PENDING`, or the outcome already reached when the
    /// `Idempotency-Key` repeated an earlier call.
    pub status: RequestStatus,
    /// How many `503`s the client waited out before the `202`.
    pub retried_503: u32,
    /// The `Idempotency-Key` the call carried (its own or a patient
    /// client's).
    pub idempotency_key: Option<String>,
    /// Ambiguous answers met before the `202`, in order: `503 <code>` (the
    /// broker may have written the record) or `cut: <what>` (the call went
    /// out and no answer came). The key makes each retry the same request,
    /// so whatever they did, the request id above has one effect.
    pub ambiguous: Vec<String>,
}

/// What the attempts of one call met before its answer.
#[derive(Debug, Clone, Default)]
struct Tries {
    retried_503: u32,
    ambiguous: Vec<String>,
}

/// Headers of one state-changing call, for [`Client::submit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Submit<'a> {
    /// `X-Queue-Token` (holds and payments).
    pub queue_token: Option<Uuid>,
    /// `Idempotency-Key`; without one, a patient client sends a fresh key
    /// of its own.
    pub idempotency_key: Option<&'a str>,
}

/// Whether a call may be repeated after it went out and no answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// A read, a keyed write or an idempotent one (PUT, DELETE).
    Safe,
    /// A write that could happen twice (creating a user, a concert):
    /// repeated only after a `503` or a connection that was never made.
    OnlyRefused,
}

/// Longest wait between two attempts, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// How long one long-poll of an outcome asks the gateway to hold the
/// answer (the gateway caps it at its own limit).
const LONG_POLL: Duration = Duration::from_secs(10);
/// How long [`Client::wait_outcome`] waits for a final outcome.
const OUTCOME_WITHIN: Duration = Duration::from_secs(120);

/// A client of one gateway, optionally with a bearer credential. Cheap to
/// clone: clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    base: Arc<str>,
    http: reqwest::Client,
    token: Option<Arc<str>>,
    patience: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("patience", &self.patience)
            .finish()
    }
}

impl Client {
    /// A client of the gateway at `base` (for example
    /// `http://127.0.0.1:8080`), impatient, without a credential.
    pub fn new(base: impl AsRef<str>) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self::with_http(http, base)
    }

    /// The same on an HTTP client of the caller's.
    pub fn with_http(http: reqwest::Client, base: impl AsRef<str>) -> Self {
        Self {
            base: base.as_ref().trim_end_matches('/').into(),
            http,
            token: None,
            patience: Duration::ZERO,
        }
    }

    /// The same client, repeating what is safe to repeat for up to
    /// `patience` per call (see the crate's documentation).
    pub fn patient(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The same client (and connection pool), calling with the bearer
    /// credential `token`: a user's, from [`Client::create_user`], or the
    /// admin's.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// How long a call keeps repeating.
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client, for calls outside the contract.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    // Users and balances.

    /// `POST /v1/users`: a new user and its bearer credential.
    pub async fn create_user(&self, user: &NewUser) -> Result<User, Error> {
        self.call(Repeat::OnlyRefused, StatusCode::CREATED, || {
            self.request(Method::POST, "/v1/users").json(user)
        })
        .await
    }

    /// `POST /v1/sessions`: logs in with an email and password; a new
    /// bearer credential (use it with [`Client::with_token`]).
    pub async fn login(&self, login: &Login) -> Result<Session, Error> {
        self.call(Repeat::OnlyRefused, StatusCode::CREATED, || {
            self.request(Method::POST, "/v1/sessions").json(login)
        })
        .await
    }

    /// `GET /v1/users/{id}/balance`.
    pub async fn balance(&self, user_id: i64) -> Result<Balance, Error> {
        self.get(&format!("/v1/users/{user_id}/balance"), &()).await
    }

    /// `GET /v1/users/{id}/balance/history`, newest first.
    pub async fn balance_history(
        &self,
        user_id: i64,
        page: &Cursor,
    ) -> Result<Paged<BalanceEntry>, Error> {
        self.get(&format!("/v1/users/{user_id}/balance/history"), page)
            .await
    }

    /// `POST /v1/users/{id}/balance/charge`.
    pub async fn charge(&self, user_id: i64, charge: &Charge) -> Result<Submitted, Error> {
        let path = format!("/v1/users/{user_id}/balance/charge");
        self.submit(&path, Some(charge), Submit::default()).await
    }

    // Concerts, the queue, reservations and payments.

    /// `POST /v1/admin/concerts` (admin credential).
    pub async fn create_concert(&self, concert: &NewConcert) -> Result<CreatedConcert, Error> {
        self.call(Repeat::OnlyRefused, StatusCode::CREATED, || {
            self.request(Method::POST, "/v1/admin/concerts")
                .json(concert)
        })
        .await
    }

    /// `GET /v1/concerts`, by id.
    pub async fn concerts(&self, page: &Cursor) -> Result<Paged<api::concert::Concert>, Error> {
        self.get("/v1/concerts", page).await
    }

    /// `GET /v1/concerts/{id}/schedules` (only those with free seats when
    /// `filter.available`).
    pub async fn schedules(
        &self,
        id: i64,
        filter: &Availability,
    ) -> Result<Items<Schedule>, Error> {
        self.get(&format!("/v1/concerts/{id}/schedules"), filter)
            .await
    }

    /// `GET /v1/schedules/{id}/seats`, in seat order (only free ones when
    /// `filter.available`).
    pub async fn seats(&self, id: i64, filter: &Availability) -> Result<Items<Seat>, Error> {
        self.get(&format!("/v1/schedules/{id}/seats"), filter).await
    }

    /// `POST /v1/queue/tokens`: joins the line of a schedule (joining again
    /// answers the same place in line).
    pub async fn join_queue(&self, join: &JoinQueue) -> Result<QueueToken, Error> {
        let (response, _) = self
            .send(Repeat::Safe, || {
                self.request(Method::POST, "/v1/queue/tokens").json(join)
            })
            .await?;
        match response.status() {
            StatusCode::OK => expect(response, StatusCode::OK).await,
            _ => expect(response, StatusCode::CREATED).await,
        }
    }

    /// `GET /v1/queue/tokens/{token}`, answered at once.
    pub async fn queue_token(&self, token: Uuid) -> Result<QueueToken, Error> {
        self.get(&format!("/v1/queue/tokens/{token}"), &()).await
    }

    /// `GET /v1/queue/tokens/{token}?wait_ms=`: near the front of the line
    /// the gateway holds the answer up to `wait` for the token to turn
    /// ACTIVE (and answers `poll_after_ms: 0`); further back it answers at
    /// once.
    pub async fn queue_token_waiting(
        &self,
        token: Uuid,
        wait: Duration,
    ) -> Result<QueueToken, Error> {
        let query = [("wait_ms", wait.as_millis())];
        self.get(&format!("/v1/queue/tokens/{token}"), &query).await
    }

    /// Follows `token` the way the gateway asks (long-polling, and waiting
    /// `poll_after_ms` between calls) until it is no longer WAITING, for up
    /// to `within`; the last answer.
    pub async fn wait_admitted(&self, token: Uuid, within: Duration) -> Result<QueueToken, Error> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let pause = match self.queue_token_waiting(token, LONG_POLL.min(left)).await {
                Ok(state) if state.status != QueueStatus::Waiting || left.is_zero() => {
                    return Ok(state)
                }
                Ok(state) => Duration::from_millis(state.poll_after_ms.unwrap_or(1_000) as u64),
                // Asked too soon (another caller polls the same token).
                Err(Error::Api { status, .. }) if status == StatusCode::TOO_MANY_REQUESTS => {
                    Duration::from_secs(1)
                }
                Err(error) => return Err(error),
            };
            tokio::time::sleep(pause.min(left)).await;
        }
    }

    /// `POST /v1/reservations`: holds a seat (needs an `ACTIVE` queue token).
    pub async fn hold(&self, hold: &HoldSeat, queue_token: Uuid) -> Result<Submitted, Error> {
        let headers = Submit {
            queue_token: Some(queue_token),
            ..Submit::default()
        };
        self.submit("/v1/reservations", Some(hold), headers).await
    }

    /// `GET /v1/reservations/{id}`.
    pub async fn reservation(&self, id: i64) -> Result<Reservation, Error> {
        self.get(&format!("/v1/reservations/{id}"), &()).await
    }

    /// `POST /v1/reservations/{id}/cancel`.
    pub async fn cancel_reservation(&self, id: i64) -> Result<Submitted, Error> {
        let path = format!("/v1/reservations/{id}/cancel");
        self.submit::<()>(&path, None, Submit::default()).await
    }

    /// `POST /v1/payments`: pays a held reservation from the balance.
    pub async fn pay(&self, pay: &PayReservation, queue_token: Uuid) -> Result<Submitted, Error> {
        let headers = Submit {
            queue_token: Some(queue_token),
            ..Submit::default()
        };
        self.submit("/v1/payments", Some(pay), headers).await
    }

    /// `GET /v1/users/{id}/reservations`, newest first.
    pub async fn reservations(
        &self,
        user_id: i64,
        page: &Cursor,
    ) -> Result<Paged<Reservation>, Error> {
        self.get(&format!("/v1/users/{user_id}/reservations"), page)
            .await
    }

    /// `GET /v1/users/{id}/payments`, newest first.
    pub async fn payments(&self, user_id: i64, page: &Cursor) -> Result<Paged<Payment>, Error> {
        self.get(&format!("/v1/users/{user_id}/payments"), page)
            .await
    }

    // The shop.

    /// `POST /v1/admin/products` (admin credential).
    pub async fn create_product(&self, product: &NewProduct) -> Result<Product, Error> {
        self.call(Repeat::OnlyRefused, StatusCode::CREATED, || {
            self.request(Method::POST, "/v1/admin/products")
                .json(product)
        })
        .await
    }

    /// `GET /v1/products`, by id.
    pub async fn products(&self, filter: &ProductFilter) -> Result<Paged<Product>, Error> {
        self.get("/v1/products", filter).await
    }

    /// `GET /v1/products/{id}`.
    pub async fn product(&self, id: i64) -> Result<Product, Error> {
        self.get(&format!("/v1/products/{id}"), &()).await
    }

    /// `GET /v1/products/top`: best sellers of the last days.
    pub async fn top_products(&self, query: &TopQuery) -> Result<TopProducts, Error> {
        self.get("/v1/products/top", query).await
    }

    /// `GET /v1/stats/products/daily`: one business day's totals per product.
    pub async fn daily_stats(&self, query: &DailyQuery) -> Result<DailyStats, Error> {
        self.get("/v1/stats/products/daily", query).await
    }

    /// `GET /v1/users/{id}/cart`.
    pub async fn cart(&self, user_id: i64) -> Result<Cart, Error> {
        self.get(&format!("/v1/users/{user_id}/cart"), &()).await
    }

    /// `PUT /v1/users/{id}/cart/items/{stock_id}`: sets a line's quantity.
    pub async fn set_cart_item(
        &self,
        user_id: i64,
        stock_id: i64,
        quantity: &SetQuantity,
    ) -> Result<Cart, Error> {
        let path = format!("/v1/users/{user_id}/cart/items/{stock_id}");
        self.call(Repeat::Safe, StatusCode::OK, || {
            self.request(Method::PUT, &path).json(quantity)
        })
        .await
    }

    /// `DELETE /v1/users/{id}/cart/items/{stock_id}`.
    pub async fn remove_cart_item(&self, user_id: i64, stock_id: i64) -> Result<Cart, Error> {
        let path = format!("/v1/users/{user_id}/cart/items/{stock_id}");
        self.call(Repeat::Safe, StatusCode::OK, || {
            self.request(Method::DELETE, &path)
        })
        .await
    }

    /// `DELETE /v1/users/{id}/cart`.
    pub async fn clear_cart(&self, user_id: i64) -> Result<Cart, Error> {
        let path = format!("/v1/users/{user_id}/cart");
        self.call(Repeat::Safe, StatusCode::OK, || {
            self.request(Method::DELETE, &path)
        })
        .await
    }

    /// `POST /v1/users/{id}/cart/checkout`: orders what the cart holds.
    pub async fn checkout(&self, user_id: i64) -> Result<Submitted, Error> {
        let path = format!("/v1/users/{user_id}/cart/checkout");
        self.submit::<()>(&path, None, Submit::default()).await
    }

    /// `POST /v1/orders`.
    pub async fn order(&self, order: &PlaceOrder) -> Result<Submitted, Error> {
        self.submit("/v1/orders", Some(order), Submit::default())
            .await
    }

    /// `GET /v1/orders/{id}`, with its items and payment.
    pub async fn order_by_id(&self, id: i64) -> Result<Order, Error> {
        self.get(&format!("/v1/orders/{id}"), &()).await
    }

    /// `GET /v1/users/{id}/orders`, newest first.
    pub async fn orders(&self, user_id: i64, page: &Cursor) -> Result<Paged<Order>, Error> {
        self.get(&format!("/v1/users/{user_id}/orders"), page).await
    }

    // Outcomes.

    /// `GET /v1/requests/{id}?wait_ms=`: where a request stands, waiting up
    /// to `wait` for it to be decided; `None` while the gateway does not
    /// know it yet (accepted moments ago, or by a gateway that has not
    /// recorded it).
    pub async fn outcome(
        &self,
        request_id: Uuid,
        wait: Duration,
    ) -> Result<Option<RequestOutcome>, Error> {
        let path = format!("/v1/requests/{request_id}");
        let query = [("wait_ms", wait.as_millis())];
        let (response, _) = self
            .send(Repeat::Safe, || {
                self.request(Method::GET, &path).query(&query)
            })
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        expect(response, StatusCode::OK).await.map(Some)
    }

    /// Long-polls `request_id` until it is decided (`SUCCEEDED`, `REJECTED`
    /// or `FAILED`), for up to two minutes (or twice the patience).
    pub async fn wait_outcome(&self, request_id: Uuid) -> Result<RequestOutcome, Error> {
        self.wait_outcome_within(request_id, OUTCOME_WITHIN.max(self.patience * 2))
            .await
    }

    /// Like [`Client::wait_outcome`], for up to `within`.
    pub async fn wait_outcome_within(
        &self,
        request_id: Uuid,
        within: Duration,
    ) -> Result<RequestOutcome, Error> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.outcome(request_id, LONG_POLL.min(left)).await? {
                Some(outcome) if outcome.status != RequestStatus::Pending => return Ok(outcome),
                Some(_) => {}
                // Accepted but not recorded yet: look again shortly.
                None => tokio::time::sleep(Duration::from_millis(50).min(left)).await,
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NoOutcome { request_id, within });
            }
        }
    }

    // The building blocks.

    /// Sends a state-changing `POST` to `path` with `body` and `headers`;
    /// the `202`'s request id. A patient client adds an `Idempotency-Key`
    /// of its own when `headers` has none, so its repeats are one request.
    pub async fn submit<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: Option<&B>,
        headers: Submit<'_>,
    ) -> Result<Submitted, Error> {
        let own_key = (headers.idempotency_key.is_none() && !self.patience.is_zero())
            .then(|| Uuid::new_v4().to_string());
        let key = headers.idempotency_key.or(own_key.as_deref());
        let repeat = if key.is_some() {
            Repeat::Safe
        } else {
            Repeat::OnlyRefused
        };
        let (response, tries) = self
            .send(repeat, || {
                let mut request = self.request(Method::POST, path);
                if let Some(body) = body {
                    request = request.json(body);
                }
                if let Some(key) = key {
                    request = request.header("Idempotency-Key", key);
                }
                if let Some(token) = headers.queue_token {
                    request = request.header("X-Queue-Token", token.to_string());
                }
                request
            })
            .await?;
        let accepted: Accepted = expect(response, StatusCode::ACCEPTED).await?;
        Ok(Submitted {
            request_id: accepted.request_id,
            status: accepted.status,
            retried_503: tries.retried_503,
            idempotency_key: key.map(str::to_owned),
            ambiguous: tries.ambiguous,
        })
    }

    /// `GET path?query` answering `200` with a `T`.
    async fn get<T: DeserializeOwned, Q: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<T, Error> {
        self.call(Repeat::Safe, StatusCode::OK, || {
            self.request(Method::GET, path).query(query)
        })
        .await
    }

    /// Sends what `make` builds (see [`Client::send`]) and reads the answer
    /// as a `T` when its status is `want`.
    async fn call<T: DeserializeOwned>(
        &self,
        repeat: Repeat,
        want: StatusCode,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<T, Error> {
        let (response, _) = self.send(repeat, make).await?;
        expect(response, want).await
    }

    /// A request to `path` with the client's credential.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends the request `make` builds, again while the answer is one to
    /// repeat and patience lasts; the last answer and how many `503`s came
    /// before it.
    async fn send(
        &self,
        repeat: Repeat,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<(Response, Tries), Error> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut tries = Tries::default();
        let mut pause = Duration::from_millis(100);
        loop {
            let wait = match make().send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(&response);
                    let again = status == StatusCode::SERVICE_UNAVAILABLE
                        || (matches!(status, StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS)
                            && retry_after.is_some());
                    if !again || tokio::time::Instant::now() >= deadline {
                        return Ok((response, tries));
                    }
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        tries.retried_503 += 1;
                        let code = response
                            .json::<ErrorBody>()
                            .await
                            .map_or_else(|_| "?".to_owned(), |body| body.error.code);
                        tries.ambiguous.push(format!("503 {code}"));
                    }
                    retry_after.unwrap_or(Duration::from_secs(1))
                }
                Err(error) => {
                    let unanswered = error.is_connect() && !error.is_timeout();
                    let may_repeat = repeat == Repeat::Safe || unanswered;
                    if !may_repeat || tokio::time::Instant::now() >= deadline {
                        return Err(error.into());
                    }
                    if !unanswered {
                        let what = if error.is_timeout() {
                            "timeout"
                        } else {
                            "no answer"
                        };
                        tries.ambiguous.push(format!("cut: {what}"));
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                    pause
                }
            };
            tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
        }
    }
}

/// `Retry-After` in seconds, as the gateway sends it.
fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The body of `response` as a `T` when its status is `want`; otherwise the
/// error body it carries.
async fn expect<T: DeserializeOwned>(response: Response, want: StatusCode) -> Result<T, Error> {
    let status = response.status();
    let text = response.text().await?;
    if status == want {
        return serde_json::from_str(&text).map_err(|_| Error::Unexpected { status, body: text });
    }
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Err(Error::Api { status, body }),
        Err(_) => Err(Error::Unexpected { status, body: text }),
    }
}
