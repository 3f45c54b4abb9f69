//! The waiting queue: join for a schedule, read a token's status (polling
//! as its answers ask, or long-polling near the front). See `crate::queue`
//! for positions, the polling policy and liveness.

use std::time::Duration;

use api::concert::{JoinQueue, QueueToken};
use api::status::QueueStatus;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, QueueTokenHeader};
use crate::queue::Held;
use crate::routes::concerts::require_schedule;
use crate::state::AppState;

/// A place in line, with how far its schedule's line has moved.
struct TokenRow {
    token: Uuid,
    user_id: i64,
    concert_schedule_id: i64,
    status: QueueStatus,
    line_no: i64,
    expires_at: Option<DateTime<Utc>>,
    /// Whether `expires_at` is still ahead by the database's clock: the one
    /// clock that decides a token's expiry (the workers' admission and
    /// expiry and the reservation lane use it too), so a gateway whose own
    /// clock is off never calls a token live that the lane refuses.
    unexpired: bool,
    /// Every place up to this number is admitted or gone.
    admitted_through: i64,
    /// The line's pace: smoothed admissions a second, fading (a minute's
    /// time constant) while the line does not move, so a stalled line is
    /// not polled as a fast one.
    admit_rate: f64,
}

/// `query_as!` of [`TokenRow`]s: a place's columns joined with its line's,
/// then `$tail` (the rest of the `WHERE`), in one statement the compiler
/// checks.
macro_rules! select_places {
    ($tail:literal, $($arg:expr),+ $(,)?) => {
        sqlx::query_as!(
            TokenRow,
            r#"SELECT q.token, q.user_id, q.concert_schedule_id, q.status AS "status: QueueStatus",
                q.line_no, q.expires_at, coalesce(q.expires_at > now(), false) AS "unexpired!",
                coalesce(l.admitted_through, 0) AS "admitted_through!",
                coalesce(l.admit_rate * exp(
                    -greatest(extract(epoch FROM now() - l.admitted_at)::float8, 0) / 60), 0)
                    AS "admit_rate!"
         FROM reservation_queue q
         LEFT JOIN queue_lines l ON l.concert_schedule_id = q.concert_schedule_id
         WHERE "# + $tail,
            $($arg),+
        )
    };
}

/// The place of `token`.
async fn find_token(state: &AppState, token: Uuid) -> ApiResult<Option<TokenRow>> {
    Ok(select_places!("q.token = $1", token)
        .fetch_optional(&state.pool)
        .await?)
}

/// The caller's live place in schedule `schedule_id`'s line, if any.
async fn live_token(
    state: &AppState,
    user_id: i64,
    schedule_id: i64,
) -> ApiResult<Option<TokenRow>> {
    Ok(select_places!(
        "q.user_id = $1 AND q.concert_schedule_id = $2 AND q.status IN ('WAITING', 'ACTIVE')",
        user_id,
        schedule_id,
    )
    .fetch_optional(&state.pool)
    .await?)
}

/// Where a waiting place stands: people up to and including it, at most.
fn position(row: &TokenRow) -> i64 {
    (row.line_no - row.admitted_through).max(1)
}

/// What a waiting place's answer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// A join: its holder may poll at once.
    Join,
    /// A poll answered at once: paced by its interval.
    Poll,
    /// A long-poll the gateway held: its holder long-polls again at once.
    Held,
}

/// The answer for `row`; a waiting place's answer also sets its pace and
/// liveness.
fn describe(state: &AppState, row: &TokenRow, asked: Asked) -> QueueToken {
    let status = match row.status {
        QueueStatus::Active if !row.unexpired => QueueStatus::Expired,
        status => status,
    };
    let (position, poll_after) = if status == QueueStatus::Waiting {
        let position = position(row);
        let interval = state.queue.policy().interval(position, row.admit_rate);
        state
            .queue
            .answered(row.token, interval, asked == Asked::Poll);
        let poll_after = if asked == Asked::Held {
            Duration::ZERO
        } else {
            interval
        };
        (Some(position), Some(poll_after.as_millis() as i64))
    } else {
        (None, None)
    };
    QueueToken {
        token: row.token,
        user_id: row.user_id,
        schedule_id: row.concert_schedule_id,
        status,
        position,
        poll_after_ms: poll_after,
        active_until: if status == QueueStatus::Active {
            row.expires_at
        } else {
            None
        },
    }
}

/// Joins the waiting queue of a schedule (201), or answers the caller's
/// live place in it (200): one per user and schedule.
#[utoipa::path(post, path = "/v1/queue/tokens", operation_id = "join_queue", tag = "queue", request_body = JoinQueue,
    security(("user" = [])),
    responses((status = 201, description = "Joined", body = QueueToken),
              (status = 200, description = "Already in line (or admitted)", body = QueueToken)))]
pub(crate) async fn join(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiJson(body): ApiJson<JoinQueue>,
) -> ApiResult<(StatusCode, Json<QueueToken>)> {
    let schedule_id = body.schedule_id;
    let (code, row) = match join_line(&state, user_id, schedule_id).await? {
        Some(joined) => joined,
        None => {
            require_schedule(&state, schedule_id).await?;
            // Joined concurrently by another call of the same user.
            let live = live_token(&state, user_id, schedule_id).await?;
            (
                StatusCode::OK,
                live.ok_or(ApiError::Conflict {
                    code: "QUEUE_BUSY",
                    message: "the queue entry changed while joining; retry".into(),
                })?,
            )
        }
    };
    Ok((code, Json(describe(&state, &row, Asked::Join))))
}

/// In one statement: the caller's live place in schedule `schedule_id`'s
/// line (200), or else a new place at its end (201), taken under the line's
/// shared lock (admission never passes a place still being taken). A live
/// place is looked for first, so a repeated join uses up no place number.
/// None when the schedule does not exist, or another call of the same user
/// joined at the same moment.
async fn join_line(
    state: &AppState,
    user_id: i64,
    schedule_id: i64,
) -> ApiResult<Option<(StatusCode, TokenRow)>> {
    let grace = state.queue.policy().abandon_after + state.queue.policy().min;
    let row = sqlx::query!(
        r#"WITH live AS (
             SELECT token, user_id, concert_schedule_id, status, line_no, expires_at
             FROM reservation_queue
             WHERE user_id = $1 AND concert_schedule_id = $2 AND status IN ('WAITING', 'ACTIVE')
         ), lock AS (
             SELECT pg_advisory_xact_lock_shared($4, queue_line_key($2))
             WHERE NOT EXISTS (SELECT 1 FROM live)
               AND EXISTS (SELECT 1 FROM concert_schedules WHERE id = $2)
         ), joined AS (
             INSERT INTO reservation_queue
                 (user_id, concert_schedule_id, token, line_no, poll_deadline)
             SELECT $1, $2, $3, nextval(queue_line_sequence($2)), now() + make_interval(secs => $5)
             FROM lock
             ON CONFLICT (user_id, concert_schedule_id) WHERE status IN ('WAITING', 'ACTIVE')
             DO NOTHING
             RETURNING token, user_id, concert_schedule_id, status, line_no, expires_at
         ), place AS (
             SELECT *, false AS joined FROM live UNION ALL SELECT *, true FROM joined
         )
         SELECT p.token AS "token!", p.user_id AS "user_id!",
                p.concert_schedule_id AS "concert_schedule_id!",
                p.status AS "status!: QueueStatus", p.line_no AS "line_no!", p.expires_at,
                coalesce(p.expires_at > now(), false) AS "unexpired!", p.joined AS "joined!", coalesce(l.admitted_through, 0) AS "admitted_through!",
                coalesce(l.admit_rate * exp(
                    -greatest(extract(epoch FROM now() - l.admitted_at)::float8, 0) / 60), 0)
                    AS "admit_rate!"
         FROM place p LEFT JOIN queue_lines l ON l.concert_schedule_id = p.concert_schedule_id"#,
        user_id,
        schedule_id,
        Uuid::new_v4(),
        platform::db::QUEUE_LINE_LOCK_CLASS,
        grace.as_secs_f64(),
    )
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|r| {
        let code = if r.joined {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let place = TokenRow {
            token: r.token,
            user_id: r.user_id,
            concert_schedule_id: r.concert_schedule_id,
            status: r.status,
            line_no: r.line_no,
            expires_at: r.expires_at,
            unexpired: r.unexpired,
            admitted_through: r.admitted_through,
            admit_rate: r.admit_rate,
        };
        (code, place)
    }))
}

/// `?wait_ms=N` of a queue token's status.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QueueWait {
    /// Long-poll: while WAITING, wait up to this many milliseconds for the
    /// token to turn ACTIVE (capped by `REQUEST_WAIT_MAX_MS`, 30 s by
    /// default). Held only near the front of the line (the first
    /// `QUEUE_LONG_POLL_PLACES`, or within reach of the line's pace);
    /// further back it answers at once. 0 or absent answers at once.
    #[param(minimum = 0)]
    wait_ms: Option<i64>,
}

/// A queue token's status and place in line.
///
/// While WAITING, the answer says when to ask again (`poll_after_ms`);
/// asking sooner answers 429 with `Retry-After`.
#[utoipa::path(get, path = "/v1/queue/tokens/{token}", operation_id = "get_queue_token", tag = "queue",
    params(("token" = String, Path, description = "The queue token"), QueueWait),
    security(("user" = [])),
    responses((status = 200, description = "The token", body = QueueToken),
              (status = 429, description = "`POLLED_TOO_SOON`: asked sooner than `poll_after_ms` allowed; ask again after `Retry-After`",
               body = api::ErrorBody,
               headers(("Retry-After" = u64, description = "Seconds to wait before asking again")))))]
pub(crate) async fn status(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiPath(token): ApiPath<String>,
    ApiQuery(wait): ApiQuery<QueueWait>,
) -> ApiResult<Json<QueueToken>> {
    let wait = u64::try_from(wait.wait_ms.unwrap_or(0))
        .map_err(|_| ApiError::invalid("wait_ms", "must be 0 or more"))?;
    let wait = Duration::from_millis(wait).min(state.max_wait);
    let token = Uuid::parse_str(&token).map_err(|_| ApiError::NotFound("queue token"))?;
    let mut row = find_token(&state, token)
        .await?
        .ok_or(ApiError::NotFound("queue token"))?;
    if row.user_id != user_id {
        return Err(ApiError::Forbidden("another user's queue token"));
    }
    let mut asked = Asked::Poll;
    if row.status == QueueStatus::Waiting {
        state
            .queue
            .check_pace(token)
            .map_err(|too_soon| ApiError::PolledTooSoon(too_soon.0))?;
        let position = position(&row);
        if !wait.is_zero() && state.queue.policy().holds(position, row.admit_rate, wait) {
            let lines = &state.queue;
            let (schedule_id, line_no) = (row.concert_schedule_id, row.line_no);
            let through = row.admitted_through;
            match lines
                .wait_admitted(schedule_id, line_no, through, wait, &state.shutdown)
                .await
            {
                Held::Admitted => {
                    asked = Asked::Held;
                    row = find_token(&state, token)
                        .await?
                        .ok_or(ApiError::NotFound("queue token"))?;
                }
                Held::Waited => asked = Asked::Held,
                // Answered at once, so paced like any poll.
                Held::Refused => {}
            }
        }
    }
    Ok(Json(describe(&state, &row, asked)))
}

/// Checks the `X-Queue-Token` of a call: it must be known, the caller's, ACTIVE,
/// not past its time, and for `schedule_id`.
pub async fn require_active_token(
    state: &AppState,
    token: QueueTokenHeader,
    user_id: i64,
    schedule_id: i64,
) -> ApiResult<Uuid> {
    let token = token.token();
    let row = find_token(state, token)
        .await?
        .ok_or(ApiError::QueueTokenInvalid("unknown token"))?;
    if row.user_id != user_id {
        return Err(ApiError::QueueTokenInvalid("another user's token"));
    }
    if row.concert_schedule_id != schedule_id {
        return Err(ApiError::QueueTokenInvalid("token is for another schedule"));
    }
    match row.status {
        QueueStatus::Active if row.unexpired => Ok(token),
        QueueStatus::Waiting => Err(ApiError::QueueTokenInvalid("still waiting in the queue")),
        _ => Err(ApiError::QueueTokenInvalid("token expired")),
    }
}
