//! Who a call is: bearer credentials (signed tokens of users, checked
//! without a database round trip, [`token`]; the admin credential from
//! configuration), passwords ([`password`]), the rate limits of the
//! public calls ([`limits`]) and the request ids a caller is answered with
//! ([`request_ids`]).

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use subtle::ConstantTimeEq;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;

pub mod limits;
pub mod password;
pub mod request_ids;
pub mod token;

pub use token::{Issued, Signer};

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
}

/// Who the bearer credential of a call stands for: the admin (the
/// configured token) or a user (a genuine signed id); 401 otherwise.
fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
    // A call with several extractors that need the caller (`Intake` and
    // `OwnUser`, say) verifies its credential once.
    if let Some(caller) = parts.extensions.get::<Caller>() {
        return Ok(*caller);
    }
    let credential = bearer(parts).ok_or(ApiError::Unauthorized)?;
    let caller = if bool::from(credential.as_bytes().ct_eq(state.admin_token.as_bytes())) {
        Caller::Admin
    } else {
        state
            .signer
            .verify(credential)
            .map(Caller::User)
            .ok_or(ApiError::Unauthorized)?
    };
    parts.extensions.insert(caller);
    Ok(caller)
}

/// The authenticated user of a call.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub i64);

impl AuthUser {
    /// Refuses with 403 unless the caller is `user_id`.
    pub fn require_self(self, user_id: i64) -> Result<(), ApiError> {
        Caller::from(self).require_access(user_id)
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(parts, state)? {
            Caller::User(id) => Ok(AuthUser(id)),
            Caller::Admin => Err(ApiError::Unauthorized),
        }
    }
}

/// A call made with the admin credential.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match authenticate(parts, state)? {
            Caller::Admin => Ok(Admin),
            Caller::User(_) => Err(ApiError::Unauthorized),
        }
    }
}

/// Either a user or the admin: read endpoints let the admin see everything.
#[derive(Debug, Clone, Copy)]
pub enum Caller {
    /// A user.
    User(i64),
    /// The admin.
    Admin,
}

impl Caller {
    /// Refuses with 403 unless the caller is `user_id` or the admin.
    pub fn require_access(self, user_id: i64) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::User(id) if id == user_id => Ok(()),
            Caller::User(_) => Err(ApiError::Forbidden("another user's resource")),
        }
    }
}

impl From<AuthUser> for Caller {
    fn from(AuthUser(id): AuthUser) -> Self {
        Caller::User(id)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state)
    }
}

/// The `{id}` of a `/v1/users/{id}/…` path whose data the caller may
/// read: their own, or anyone's for the admin (403 otherwise).
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReadableUser {
    /// The user
    pub id: i64,
}

impl FromRequestParts<AppState> for ReadableUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(parts, state)?;
        let id = user_in_path(parts, state).await?;
        caller.require_access(id)?;
        Ok(Self { id })
    }
}

/// The `{id}` of a `/v1/users/{id}/…` path the caller acts on: only their
/// own (403 otherwise; the admin acts as no user).
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OwnUser {
    /// The caller's own user id
    pub id: i64,
}

impl FromRequestParts<AppState> for OwnUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let id = user_in_path(parts, state).await?;
        user.require_self(id)?;
        Ok(Self { id })
    }
}

/// The `{id}` path parameter of a user's route.
async fn user_in_path(parts: &mut Parts, state: &AppState) -> Result<i64, ApiError> {
    let params = RawPathParams::from_request_parts(parts, state)
        .await
        .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))?;
    params
        .iter()
        .find(|(name, _)| *name == "id")
        .and_then(|(_, value)| value.parse().ok())
        .ok_or_else(|| ApiError::invalid("id", "not a user id"))
}
