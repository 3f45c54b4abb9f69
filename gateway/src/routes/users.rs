//! `POST /v1/users` (sign-up) and `POST /v1/sessions` (login): identity,
//! answered with a signed bearer credential that expires.

use api::users::{Login, NewUser, Session, User};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use secrecy::SecretString;

use crate::auth::limits::ClientAddr;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;

/// Signs up: creates a user (with a zero balance and the password's
/// Argon2id hash) and answers their bearer credential.
#[utoipa::path(post, path = "/v1/users", operation_id = "create_user", tag = "users", request_body = NewUser,
    responses((status = 201, description = "Created", body = User),
              (status = 409, description = "`EMAIL_TAKEN`: a user with this email exists", body = api::ErrorBody),
              (status = 429, description = "`RATE_LIMITED`: too many sign-ups from this address; try again after `Retry-After`", body = api::ErrorBody,
               headers(("Retry-After" = u64, description = "Seconds until a sign-up from this address is accepted again")))))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    state.limits.signup(client)?;
    let email = crate::validate::email_key(&body.email);
    let name = body.name.trim().to_owned();
    let hash = state
        .passwords
        .hash(SecretString::from(body.password))
        .await?;
    let mut tx = state.pool.begin().await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO users (email, name, password) VALUES ($1, $2, $3) RETURNING id",
        email,
        name,
        hash,
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
    let issued = state.signer.issue(id);
    Ok((
        StatusCode::CREATED,
        Json(User {
            id,
            name,
            email,
            token: issued.token,
            expires_at: issued.expires_at,
        }),
    ))
}

/// Logs in: a new bearer credential for the email and password of a user.
/// A wrong email and a wrong password get the same answer, in the same
/// time.
#[utoipa::path(post, path = "/v1/sessions", operation_id = "login", tag = "users", request_body = Login,
    responses((status = 201, description = "A new credential", body = Session),
              (status = 401, description = "`INVALID_CREDENTIALS`: no user has this email and password (which of the two is wrong is not said)", body = api::ErrorBody),
              (status = 429, description = "`RATE_LIMITED`: too many logins from this address or for this account; try again after `Retry-After`", body = api::ErrorBody,
               headers(("Retry-After" = u64, description = "Seconds until a login is accepted again")))))]
pub(crate) async fn login(
    State(state): State<AppState>,
    client: ClientAddr,
    ApiJson(body): ApiJson<Login>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let email = crate::validate::email_key(&body.email);
    state.limits.login(client, &email)?;
    let row = sqlx::query!("SELECT id, password FROM users WHERE email = $1", email)
        .fetch_optional(&state.pool)
        .await?;
    let (user_id, stored) = match row {
        Some(row) => (Some(row.id), row.password),
        None => (None, None),
    };
    let matches = state
        .passwords
        .verify(SecretString::from(body.password), stored)
        .await;
    let user_id = user_id
        .filter(|_| matches)
        .ok_or(ApiError::InvalidCredentials)?;
    let issued = state.signer.issue(user_id);
    Ok((
        StatusCode::CREATED,
        Json(Session {
            user_id,
            token: issued.token,
            expires_at: issued.expires_at,
        }),
    ))
}
