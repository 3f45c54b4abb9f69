//! `POST /v1/users`: identity, with a signed bearer credential.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;

/// Body of `POST /v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    email: String,
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/users", post(create_user))
}

fn validate(user: &NewUser) -> ApiResult<()> {
    let name = user.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
    }
    let email = user.email.trim();
    let well_formed = email.len() <= 255
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
        });
    if !well_formed {
        return Err(ApiError::invalid(
            "email",
            "must be an email address of at most 255 characters",
        ));
    }
    Ok(())
}

async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate(&body)?;
    let email = body.email.trim().to_lowercase();
    let name = body.name.trim().to_owned();
    let mut tx = state.pool.begin().await?;
    let id: i64 =
        sqlx::query_scalar("INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id")
            .bind(&email)
            .bind(&name)
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
    sqlx::query("INSERT INTO balances (user_id, balance) VALUES ($1, 0)")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let token = state.signer.issue(id);
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "name": name, "email": email, "token": token})),
    ))
}
