//! The waiting queue: join for a schedule, read a token's status.

use api::concert::{JoinQueue, QueueToken};
use api::status::QueueStatus;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, QueueTokenHeader};
use crate::routes::concerts::require_schedule;
use crate::state::AppState;

struct TokenRow {
    token: Uuid,
    user_id: i64,
    concert_schedule_id: i64,
    status: QueueStatus,
    queue_no: i64,
    expires_at: Option<DateTime<Utc>>,
}

/// The queue entry of `token`.
async fn find_token(state: &AppState, token: Uuid) -> ApiResult<Option<TokenRow>> {
    Ok(sqlx::query_as!(
        TokenRow,
        r#"SELECT token, user_id, concert_schedule_id, status AS "status: QueueStatus", queue_no,
                expires_at
         FROM reservation_queue WHERE token = $1"#,
        token,
    )
    .fetch_optional(&state.pool)
    .await?)
}

async fn describe(state: &AppState, row: &TokenRow) -> ApiResult<QueueToken> {
    let position: Option<i64> = if row.status == QueueStatus::Waiting {
        Some(
            sqlx::query_scalar!(
                r#"SELECT count(*) + 1 AS "position!" FROM reservation_queue
                 WHERE concert_schedule_id = $1 AND status = 'WAITING' AND queue_no < $2"#,
                row.concert_schedule_id,
                row.queue_no,
            )
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
pub(crate) async fn join(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiJson(body): ApiJson<JoinQueue>,
) -> ApiResult<(StatusCode, Json<QueueToken>)> {
    require_schedule(&state, body.schedule_id).await?;
    // One live place in line per user and schedule: joining again returns it.
    let inserted = sqlx::query_as!(
        TokenRow,
        r#"INSERT INTO reservation_queue (user_id, concert_schedule_id, token)
         VALUES ($1, $2, $3)
         ON CONFLICT (user_id, concert_schedule_id) WHERE status IN ('WAITING', 'ACTIVE') DO NOTHING
         RETURNING token, user_id, concert_schedule_id, status AS "status: QueueStatus", queue_no,
                   expires_at"#,
        user_id,
        body.schedule_id,
        Uuid::new_v4(),
    )
    .fetch_optional(&state.pool)
    .await?;
    let (code, row) = match inserted {
        Some(row) => (StatusCode::CREATED, row),
        None => {
            let row = sqlx::query_as!(
                TokenRow,
                r#"SELECT token, user_id, concert_schedule_id, status AS "status: QueueStatus",
                        queue_no, expires_at
                 FROM reservation_queue
                 WHERE user_id = $1 AND concert_schedule_id = $2
                   AND status IN ('WAITING', 'ACTIVE')"#,
                user_id,
                body.schedule_id,
            )
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
pub(crate) async fn status(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiPath(token): ApiPath<String>,
) -> ApiResult<Json<QueueToken>> {
    let token = Uuid::parse_str(&token).map_err(|_| ApiError::NotFound("queue token"))?;
    let row = find_token(&state, token)
        .await?
        .ok_or(ApiError::NotFound("queue token"))?;
    if row.user_id != user_id {
        return Err(ApiError::Forbidden("another user's queue token"));
    }
    Ok(Json(describe(&state, &row).await?))
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
    match (row.status, row.expires_at) {
        (QueueStatus::Active, Some(at)) if at > Utc::now() => Ok(token),
        (QueueStatus::Waiting, _) => Err(ApiError::QueueTokenInvalid("still waiting in the queue")),
        _ => Err(ApiError::QueueTokenInvalid("token expired")),
    }
}
