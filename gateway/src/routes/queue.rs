//! The waiting queue: join for a schedule, read a token's status.

use api::concert::{JoinQueue, QueueToken};
use api::status::QueueStatus;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(join))
        .routes(routes!(status))
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    token: Uuid,
    user_id: i64,
    concert_schedule_id: i64,
    status: QueueStatus,
    queue_no: i64,
    expires_at: Option<DateTime<Utc>>,
}

const TOKEN_COLUMNS: &str = "token, user_id, concert_schedule_id, status, queue_no, expires_at";

async fn describe(state: &AppState, row: &TokenRow) -> ApiResult<QueueToken> {
    let position: Option<i64> = if row.status == QueueStatus::Waiting {
        Some(
            sqlx::query_scalar(
                "SELECT count(*) + 1 FROM reservation_queue
                 WHERE concert_schedule_id = $1 AND status = 'WAITING' AND queue_no < $2",
            )
            .bind(row.concert_schedule_id)
            .bind(row.queue_no)
            .fetch_one(&state.pool)
            .await?,
        )
    } else {
        None
    };
    let status = match (row.status, row.expires_at) {
        (QueueStatus::Active, Some(at)) if at <= Utc::now() => QueueStatus::Expired,
        (status, _) => status,
    };
    Ok(QueueToken {
        token: row.token,
        user_id: row.user_id,
        schedule_id: row.concert_schedule_id,
        status,
        position,
        active_until: if status == QueueStatus::Active {
            row.expires_at
        } else {
            None
        },
    })
}

/// Joins the waiting queue of a schedule (201), or answers the caller's
/// live place in it (200): one per user and schedule.
#[utoipa::path(post, path = "/v1/queue/tokens", operation_id = "join_queue", tag = "queue", request_body = JoinQueue,
    security(("user" = [])),
    responses((status = 201, description = "Joined", body = QueueToken),
              (status = 200, description = "Already in line (or admitted)", body = QueueToken)))]
async fn join(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiJson(body): ApiJson<JoinQueue>,
) -> ApiResult<(StatusCode, Json<QueueToken>)> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM concert_schedules WHERE id = $1)")
            .bind(body.schedule_id)
            .fetch_one(&state.pool)
            .await?;
    if !exists {
        return Err(ApiError::NotFound("schedule"));
    }
    // One live place in line per user and schedule: joining again returns it.
    let inserted: Option<TokenRow> = sqlx::query_as(&format!(
        "INSERT INTO reservation_queue (user_id, concert_schedule_id, token)
         VALUES ($1, $2, $3)
         ON CONFLICT (user_id, concert_schedule_id) WHERE status IN ('WAITING', 'ACTIVE') DO NOTHING
         RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(user_id)
    .bind(body.schedule_id)
    .bind(Uuid::new_v4())
    .fetch_optional(&state.pool)
    .await?;
    let (code, row) = match inserted {
        Some(row) => (StatusCode::CREATED, row),
        None => {
            let row: TokenRow = sqlx::query_as(&format!(
                "SELECT {TOKEN_COLUMNS} FROM reservation_queue
                 WHERE user_id = $1 AND concert_schedule_id = $2 AND status IN ('WAITING', 'ACTIVE')"
            ))
            .bind(user_id)
            .bind(body.schedule_id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or(ApiError::Conflict {
                code: "QUEUE_BUSY",
                message: "the queue entry changed while joining; retry".into(),
            })?;
            (StatusCode::OK, row)
        }
    };
    Ok((code, Json(describe(&state, &row).await?)))
}

/// A queue token's status and place in line.
#[utoipa::path(get, path = "/v1/queue/tokens/{token}", operation_id = "get_queue_token", tag = "queue",
    params(("token" = String, Path, description = "The queue token")),
    security(("user" = [])),
    responses((status = 200, description = "The token", body = QueueToken)))]
async fn status(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<Json<QueueToken>> {
    let token = Uuid::parse_str(&token).map_err(|_| ApiError::NotFound("queue token"))?;
    let row: TokenRow = sqlx::query_as(&format!(
        "SELECT {TOKEN_COLUMNS} FROM reservation_queue WHERE token = $1"
    ))
    .bind(token)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("queue token"))?;
    if row.user_id != user_id {
        return Err(ApiError::Forbidden("another user's queue token"));
    }
    Ok(Json(describe(&state, &row).await?))
}

/// Checks the `X-Queue-Token` of a call: it must be the caller's, ACTIVE,
/// not past its time, and for `schedule_id`.
pub async fn require_active_token(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    user_id: i64,
    schedule_id: i64,
) -> ApiResult<Uuid> {
    let raw = headers
        .get("x-queue-token")
        .ok_or(ApiError::QueueTokenRequired)?
        .to_str()
        .map_err(|_| ApiError::QueueTokenInvalid("malformed"))?;
    let token =
        Uuid::parse_str(raw.trim()).map_err(|_| ApiError::QueueTokenInvalid("malformed"))?;
    let row: TokenRow = sqlx::query_as(&format!(
        "SELECT {TOKEN_COLUMNS} FROM reservation_queue WHERE token = $1"
    ))
    .bind(token)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::QueueTokenInvalid("unknown token"))?;
    if row.user_id != user_id {
        return Err(ApiError::QueueTokenInvalid("another user's token"));
    }
    if row.concert_schedule_id != schedule_id {
        return Err(ApiError::QueueTokenInvalid("token is for another schedule"));
    }
    match (row.status, row.expires_at) {
        (QueueStatus::Active, Some(at)) if at > Utc::now() => Ok(token),
        (QueueStatus::Waiting, _) => Err(ApiError::QueueTokenInvalid("still waiting in the queue")),
        _ => Err(ApiError::QueueTokenInvalid("token expired")),
    }
}
