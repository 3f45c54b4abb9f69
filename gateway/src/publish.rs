//! The accept path of every state-changing call, in one place
//! ([`Intake::accept`]): the request id (from the `Idempotency-Key`, scoped
//! by caller and matched route), the answer for a repeated call, the
//! handler's look-ups, then publishing to the request's topic, waiting for
//! the broker's acknowledgement and answering 202 (a keyed call's claim
//! recorded as published first; an unkeyed call's id signed, see
//! [`crate::auth::request_ids`], its row deferred, see [`crate::pending`]).

use api::status::RequestStatus;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use platform::kafka::{self, OutgoingRecord};
use schemas::{Request, RequestEnvelope};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::pending::PendingRow;
use crate::state::AppState;

/// A state-changing call on its way in: who makes it, on which route, with
/// which path parameters and headers. Handlers validate their body, then
/// hand it to [`Intake::accept`] with the look-ups that turn it into a
/// [`Request`].
pub struct Intake {
    state: AppState,
    user: AuthUser,
    headers: HeaderMap,
    /// `METHOD /matched/{template}`: what an `Idempotency-Key` is scoped by.
    route: String,
    /// The path parameters as sent, in template order.
    path: Vec<(String, String)>,
}

impl FromRequestParts<AppState> for Intake {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let template = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .ok_or_else(|| anyhow::anyhow!("an accept route without a matched path"))?;
        let path = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))?
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        Ok(Self {
            state: state.clone(),
            user,
            headers: parts.headers.clone(),
            route: format!("{} {template}", parts.method),
            path,
        })
    }
}

impl Intake {
    /// The handlers' state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The caller.
    pub fn user(&self) -> AuthUser {
        self.user
    }

    /// The caller's id.
    pub fn user_id(&self) -> i64 {
        self.user.0
    }

    /// Accepts the call: derives its request id, answers a repeat of an
    /// earlier keyed call as that call was answered, else runs `build` (the
    /// handler's look-ups and checks, which may refuse the call) and
    /// publishes the request it returns. `body` is what the call sent (with
    /// the path parameters, what an `Idempotency-Key` must always mean).
    pub async fn accept(
        self,
        body: &impl Serialize,
        build: impl AsyncFnOnce(&Intake) -> ApiResult<Request>,
    ) -> ApiResult<Accepted> {
        let keyed = keyed_id(&self.headers, self.user.0, &self.route, &(&self.path, body))?;
        if let Some(keyed) = &keyed {
            if let Some(response) = replay(&self.state, keyed).await? {
                return Ok(response);
            }
        }
        let request = build(&self).await?;
        let id = keyed.unwrap_or_else(|| RequestId {
            id: self.state.request_ids.issue(self.user.0, &request),
            fingerprint: None,
        });
        submit(&self.state, id, request).await
    }
}

/// Namespace of request ids derived from an `Idempotency-Key`.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_9a52_0c3e_4b8e_9d41_7a0b_52c8_e013);

/// How long an `Idempotency-Key` claim may wait for its broker
/// acknowledgement before a retry may take it over (the first call's
/// gateway died between claiming and publishing). Far above any produce
/// timeout.
const STALE_CLAIM_SECS: f64 = 30.0;

/// The id of an accepted call.
#[derive(Debug, Clone)]
pub struct RequestId {
    /// The request id.
    pub id: Uuid,
    /// Derived from an `Idempotency-Key`: the fingerprint of what the call
    /// asked for (route, path parameters, body).
    fingerprint: Option<Vec<u8>>,
}

/// The request id of a call with an `Idempotency-Key`: derived from the
/// caller, the route template and the key (so a retry maps to the same
/// id), with the fingerprint of `input` (path parameters and body), so the
/// same key with another input is refused. None without a key: the call
/// gets a fresh signed id once its request is built.
fn keyed_id(
    headers: &HeaderMap,
    caller: i64,
    route: &str,
    input: &impl Serialize,
) -> ApiResult<Option<RequestId>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|k| {
            (1..=api::limits::MAX_IDEMPOTENCY_KEY_BYTES).contains(&k.len())
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    let name = format!("{caller}\u{1f}{route}\u{1f}{key}");
    let canonical = serde_json::to_vec(&(route, input)).map_err(anyhow::Error::from)?;
    Ok(Some(RequestId {
        id: Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes()),
        fingerprint: Some(Sha256::digest(&canonical).to_vec()),
    }))
}

/// What the `requests` table says of a keyed call's id.
struct Claim {
    status: RequestStatus,
    fingerprint: Option<Vec<u8>>,
    /// The broker acknowledged it (or a lane decided it already).
    published: bool,
    /// Claimed long ago and never acknowledged: the claiming call died.
    stale: bool,
}

impl Claim {
    /// The answer to a call whose id is claimed already, or None when this
    /// call may go on (and take a stale claim over).
    fn answer(&self, request: &RequestId) -> ApiResult<Option<Accepted>> {
        if self.fingerprint != request.fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        if self.published {
            return Ok(Some(Accepted::new(request.id, self.status)));
        }
        if self.stale {
            return Ok(None);
        }
        Err(ApiError::IdempotencyKeyInUse)
    }
}

async fn read_claim(state: &AppState, id: Uuid) -> ApiResult<Option<Claim>> {
    Ok(sqlx::query_as!(
        Claim,
        r#"SELECT status AS "status: RequestStatus", fingerprint,
                (kafka_offset IS NOT NULL OR status <> 'PENDING') AS "published!",
                accepted_at < now() - make_interval(secs => $2) AS "stale!"
         FROM requests WHERE id = $1"#,
        id,
        STALE_CLAIM_SECS,
    )
    .fetch_optional(&state.pool)
    .await?)
}

/// The answer to a repeated idempotent call whose request was accepted
/// before: the same request id, without checking or publishing again (the
/// first call may have changed what the checks see, for example by
/// expiring the queue token). The same key with another body is refused
/// (`422 IDEMPOTENCY_KEY_REUSED`); while the first call with the key is
/// still being published, a second one is told to retry (`409
/// IDEMPOTENCY_KEY_IN_USE`).
async fn replay(state: &AppState, request_id: &RequestId) -> ApiResult<Option<Accepted>> {
    match read_claim(state, request_id.id).await? {
        Some(claim) => claim.answer(request_id),
        None => Ok(None),
    }
}

/// Claims a keyed request id before it is published, so two concurrent
/// calls with one key cannot both publish: the row is inserted PENDING with
/// the call's fingerprint (or a stale claim of the same call is taken over).
/// Returns the answer for the losing call.
async fn claim(
    state: &AppState,
    request_id: &RequestId,
    request: &Request,
) -> ApiResult<Option<Accepted>> {
    let claimed = sqlx::query_scalar!(
        "INSERT INTO requests (id, type, user_id, status, fingerprint)
         VALUES ($1, $2, $3, 'PENDING', $4)
         ON CONFLICT (id) DO UPDATE SET accepted_at = now()
         WHERE requests.status = 'PENDING' AND requests.kafka_offset IS NULL
           AND requests.fingerprint = EXCLUDED.fingerprint
           AND requests.accepted_at < now() - make_interval(secs => $5)
         RETURNING id",
        request_id.id,
        request.type_name(),
        request.user_id(),
        request_id.fingerprint.as_deref(),
        STALE_CLAIM_SECS,
    )
    .fetch_optional(&state.pool)
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    match read_claim(state, request_id.id).await? {
        Some(claim) => match claim.answer(request_id)? {
            Some(response) => Ok(Some(response)),
            // Stale a moment ago, taken over by another retry since.
            None => Err(ApiError::IdempotencyKeyInUse),
        },
        // Released by a failed first call a moment ago: ask for a retry.
        None => Err(ApiError::IdempotencyKeyInUse),
    }
}

/// Gives a claim back after its publish failed, so a retry can publish.
async fn release_claim(state: &AppState, id: Uuid) {
    let released = sqlx::query!(
        "DELETE FROM requests WHERE id = $1 AND status = 'PENDING' AND kafka_offset IS NULL",
        id,
    )
    .execute(&state.pool)
    .await;
    if let Err(error) = released {
        tracing::warn!(%id, %error, "could not release an idempotency claim; a retry may publish after 30 s");
    }
}

/// Keeps a claim whose publish failed ambiguously, and lets a retry take it
/// over at once (as if it were stale) to publish again under the same id.
async fn reopen_claim(state: &AppState, id: Uuid) {
    let reopened = sqlx::query!(
        "UPDATE requests SET accepted_at = now() - make_interval(secs => $2)
         WHERE id = $1 AND status = 'PENDING' AND kafka_offset IS NULL",
        id,
        STALE_CLAIM_SECS,
    )
    .execute(&state.pool)
    .await;
    if let Err(error) = reopened {
        tracing::warn!(%id, %error, "could not reopen an idempotency claim; a retry may publish after 30 s");
    }
}

/// Publishes `request` under `request_id` and answers 202. Callers look
/// for an earlier acceptance with [`replay`] first; a keyed call claims its
/// id here, just before publishing.
async fn submit(state: &AppState, request_id: RequestId, request: Request) -> ApiResult<Accepted> {
    let keyed = request_id.fingerprint.is_some();
    if keyed {
        if let Some(response) = claim(state, &request_id, &request).await? {
            return Ok(response);
        }
    }
    let request_id = request_id.id;
    // The HTTP span carries the request's id and its trace, which the
    // lanes continue from the record's `traceparent`.
    let span = tracing::Span::current();
    span.record("request_id", tracing::field::display(request_id));
    span.record("trace_id", schemas::trace_id_for(request_id).as_str());
    let envelope = RequestEnvelope::new(request_id, request);
    let record = OutgoingRecord::request(&state.topics, &envelope).map_err(anyhow::Error::from)?;
    let started = std::time::Instant::now();
    let delivered = match kafka::produce(&state.producer, &record, state.produce_timeout).await {
        Ok(delivered) => delivered,
        Err(error) => {
            metrics::counter!("gateway_publish_failures_total").increment(1);
            // A keyed call's claim is given back only when the record
            // certainly never reached the broker. After an ambiguous failure
            // (a timeout: the broker may have written it) the claim stays
            // with the call's fingerprint, open to a retry at once: a retry
            // with the same key and body gets this request id, with its
            // outcome if the record was applied meanwhile, or publishes it
            // again under the same id, which the lane applies once.
            // Releasing it instead let the lane's row (which has no
            // fingerprint) refuse the retry as another call's key.
            if keyed {
                if error.never_sent() {
                    release_claim(state, request_id).await;
                } else {
                    reopen_claim(state, request_id).await;
                }
            }
            return Err(ApiError::KafkaUnavailable(error));
        }
    };
    metrics::histogram!("gateway_publish_seconds").record(started.elapsed().as_secs_f64());
    let published = std::time::Instant::now();
    // Debug, not info: at thousands of accepts a second a line each cost the
    // gateway an eighth of its CPU (bench/NOTES.md), and where the record
    // landed is in the request's row (`topic`, `kafka_partition`,
    // `kafka_offset`) anyway.
    tracing::debug!(
        %request_id,
        request_type = envelope.request.type_name(),
        topic = %record.topic,
        partition = delivered.partition,
        offset = delivered.offset,
        "request accepted"
    );
    metrics::counter!("gateway_requests_accepted_total", "type" => envelope.request.type_name())
        .increment(1);
    state.waiter.accepted(
        request_id,
        envelope.request.type_name(),
        envelope.request.user_id(),
    );

    // The record is durable in Kafka: the request is accepted whatever
    // happens next. A keyed call's claim must say so before the answer (a
    // retry of it reads the claim); a database hiccup there is logged, not
    // returned (the retry is told to wait, then takes the claim over only
    // if it went stale). An unkeyed call's row is written later, if at all
    // (`pending`): its signed id answers polls meanwhile.
    let row = PendingRow {
        id: request_id,
        request_type: envelope.request.type_name(),
        user_id: envelope.request.user_id(),
        topic: record.topic.clone(),
        partition: delivered.partition,
        offset: delivered.offset,
        accepted_at: envelope.timestamp,
    };
    if keyed {
        let inserted = state.pending.record_now(row).await;
        metrics::histogram!("gateway_pending_insert_seconds")
            .record(published.elapsed().as_secs_f64());
        if let Err(error) = inserted {
            tracing::warn!(%request_id, %error, "could not record the accepted request as published");
        }
    } else {
        state.pending.record_later(row);
    }
    Ok(Accepted::new(request_id, RequestStatus::Pending))
}

/// The answer to an accepted call, or to a repeat of one: `202` with the
/// request id and its status, and the `Location` to poll.
#[derive(Debug, utoipa::IntoResponses)]
#[response(status = 202, description = "Accepted: poll Location for the outcome",
    headers(("Location" = String, description = "/v1/requests/{request_id}")))]
pub struct Accepted(api::Accepted);

impl Accepted {
    fn new(request_id: Uuid, status: RequestStatus) -> Self {
        Self(api::Accepted { request_id, status })
    }
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        let location = format!("/v1/requests/{}", self.0.request_id);
        let mut response = (StatusCode::ACCEPTED, Json(self.0)).into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }
}
