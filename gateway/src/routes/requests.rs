//! `GET /v1/requests/{id}`: the outcome of an accepted request, with an
//! optional long-poll.

use std::sync::Arc;
use std::time::Duration;

use api::outcomes::OutcomeError;
use api::status::RequestStatus;
use api::RequestOutcome;
use axum::extract::State;
use axum::Json;
use platform::db::RequestView;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use crate::waiter::{KnownRequest, PENDING};

/// `?wait_ms=N`: long-poll.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Wait {
    /// Wait up to this many milliseconds for the outcome while PENDING
    /// (capped by the gateway's `REQUEST_WAIT_MAX_MS`, 30 s by default);
    /// 0 or absent answers at once.
    #[param(minimum = 0)]
    wait_ms: Option<i64>,
}

/// Where request `id` stands: its `requests` row; with no row yet (an
/// unkeyed call's row is written only if it is still undecided after
/// `PENDING_ROW_AFTER_MS`, see [`crate::pending`]), what this gateway
/// remembers of it if it accepted it and has not heard of its outcome,
/// else PENDING when the id is one signed for `caller`. 404 otherwise, and for a signed
/// id older than `REQUEST_RETENTION_DAYS` (its row was pruned). The caller
/// checks access against what this returns.
async fn load(state: &AppState, caller: Caller, id: Uuid) -> ApiResult<KnownRequest> {
    metrics::counter!("gateway_request_reads_total").increment(1);
    let row = sqlx::query_as!(
        RequestView,
        "SELECT type AS request_type, user_id, status, result, error_code, error_message
         FROM requests WHERE id = $1",
        id,
    )
    .fetch_optional(&state.pool)
    .await?;
    if let Some(row) = row {
        return Ok(Arc::new(row));
    }
    // Accepted here and not decided as far as this gateway heard: it knows
    // whose it is. (A decided request without a row was pruned: 404, on
    // every gateway alike.)
    if let Some(known) = state.waiter.known(id).filter(|k| k.status == PENDING) {
        return Ok(known);
    }
    let Caller::User(user_id) = caller else {
        return Err(ApiError::NotFound("request"));
    };
    let issued = state
        .request_ids
        .verify(id, user_id)
        .filter(|issued| issued.at.elapsed().unwrap_or_default() < state.retention)
        .ok_or(ApiError::NotFound("request"))?;
    Ok(Arc::new(RequestView {
        request_type: issued.request_type.to_owned(),
        user_id: Some(user_id),
        status: PENDING.to_owned(),
        result: None,
        error_code: None,
        error_message: None,
    }))
}

fn authorize(caller: Caller, row: &RequestView) -> ApiResult<()> {
    match row.user_id {
        Some(owner) => caller.require_access(owner),
        None if matches!(caller, Caller::Admin) => Ok(()),
        None => Err(ApiError::Forbidden("system request")),
    }
}

/// The outcome of an accepted request, optionally waiting for it.
///
/// The id a 202 answered without an `Idempotency-Key` is signed for the
/// caller: until the request has a row (its outcome, or
/// `PENDING_ROW_AFTER_MS` after it was accepted while still undecided),
/// any gateway answers that caller PENDING; anyone else gets 404 (403, and
/// the admin PENDING, from the gateway that accepted it), and 403 once the
/// row exists. An unknown id, or one older than `REQUEST_RETENTION_DAYS`,
/// answers 404.
#[utoipa::path(get, path = "/v1/requests/{id}", operation_id = "get_request", tag = "requests",
    params(("id" = Uuid, Path, description = "The request id a 202 answered"), Wait),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "Where the request stands", body = RequestOutcome)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(wait): ApiQuery<Wait>,
) -> ApiResult<Json<RequestOutcome>> {
    let wait_ms = wait.wait_ms.unwrap_or(0);
    // An int64 as documented (a larger number is refused as it parses).
    let wait_ms =
        u64::try_from(wait_ms).map_err(|_| ApiError::invalid("wait_ms", "must be 0 or more"))?;
    let wait = Duration::from_millis(wait_ms).min(state.max_wait);
    // Past LONG_POLL_MAX waiting long-polls, a long-poll is answered at
    // once, as a plain GET: clients poll again, and the gateway's memory
    // and connections stay bounded.
    let subscription = if wait.is_zero() {
        None
    } else {
        state.waiter.subscribe(id)
    };
    let row = match subscription {
        None => {
            let row = load(&state, caller, id).await?;
            authorize(caller, &row)?;
            row
        }
        // The subscription is dropped with this handler, even when the
        // client goes away mid-wait.
        Some(subscription) => {
            wait_for_outcome(&state, caller, id, subscription.notify(), wait).await?
        }
    };
    Ok(Json(outcome(id, &row)?))
}

/// The API's view of a `requests` row.
fn outcome(id: Uuid, row: &RequestView) -> ApiResult<RequestOutcome> {
    let status: RequestStatus = row
        .status
        .parse()
        .map_err(|e| anyhow::anyhow!("request {id}: {e}"))?;
    let result = match &row.result {
        Some(result) => Some(
            serde_json::from_value(result.clone())
                .map_err(|e| anyhow::anyhow!("request {id} has a result of no known shape: {e}"))?,
        ),
        None => None,
    };
    Ok(RequestOutcome {
        request_id: id,
        request_type: row.request_type.clone(),
        status,
        result,
        error: row.error_code.as_ref().map(|code| OutcomeError {
            code: code.clone(),
            message: row.error_message.clone().unwrap_or_default(),
        }),
    })
}

/// Looks the request up until it is decided or `wait` has passed. The first
/// look also checks access, so nobody can hold a connection open on someone
/// else's (or an unknown) request. The gateway's cache answers when it can:
/// a decided request from its notification, and one accepted here (still
/// PENDING in the cache) for the first look only, as the reason to wait; a
/// missed notification could leave that entry stale, so every later look at
/// an undecided request reads the database.
async fn wait_for_outcome(
    state: &AppState,
    caller: Caller,
    id: Uuid,
    notify: &tokio::sync::Notify,
    wait: Duration,
) -> ApiResult<KnownRequest> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut first = true;
    loop {
        // Register interest before looking, so an outcome written between
        // the look and the wait still wakes us.
        let notified = notify.notified();
        let now = tokio::time::Instant::now();
        let row = match state.waiter.known(id) {
            Some(known) if known.status != PENDING || (first && now < deadline) => known,
            _ => load(state, caller, id).await?,
        };
        if first {
            authorize(caller, &row)?;
            first = false;
        }
        if row.status != PENDING || now >= deadline {
            return Ok(row);
        }
        // Re-check at least every second in case a notification was lost;
        // a shutting-down gateway answers with what it has.
        let nap = (deadline - now).min(Duration::from_secs(1));
        tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(row),
            _ = tokio::time::timeout(nap, notified) => {}
        }
    }
}
