//! `POST /v1/users`: identity, with a signed bearer credential.

use api::users::{NewUser, User};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;

/// Creates a user (with a zero balance) and answers their bearer
/// credential.
#[utoipa::path(post, path = "/v1/users", operation_id = "create_user", tag = "users", request_body = NewUser,
    responses((status = 201, description = "Created", body = User),
              (status = 409, description = "`EMAIL_TAKEN`: a user with this email exists", body = api::ErrorBody)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let email = body.email.to_lowercase();
    let name = body.name.trim().to_owned();
    let mut tx = state.pool.begin().await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id",
        email,
        name,
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        if platform::db::is_unique_violation(&e, "users_email_key") {
            ApiError::Conflict {
                code: "EMAIL_TAKEN",
                message: "a user with this email exists".into(),
            }
        } else {
            e.into()
        }
    })?;
    sqlx::query!("INSERT INTO balances (user_id, balance) VALUES ($1, 0)", id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let token = state.signer.issue(id);
    Ok((
        StatusCode::CREATED,
        Json(User {
            id,
            name,
            email,
            token,
        }),
    ))
}
