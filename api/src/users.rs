//! Users and their balance.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::status::BalanceChange;

/// `POST /v1/users`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Display name: 1 to 100 characters, no control characters; leading
    /// and trailing spaces are dropped (and a blank name refused).
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F]+$"
    )]
    pub name: String,
    /// Email address (`local@domain.tld`), at most 255 characters, without
    /// spaces or control characters; unique regardless of case.
    #[schema(
        max_length = 255,
        pattern = r"^[^@\s\u0000-\u001F\u007F-\u009F]+@[^@\s\u0000-\u001F\u007F-\u009F]+\.[^@\s\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub email: String,
    /// Password: 8 to 256 characters, any of them (kept as an Argon2id
    /// hash; `POST /v1/sessions` takes it to issue a new credential).
    #[schema(
        min_length = 8,
        max_length = 256,
        format = Password,
        pattern = r"^[^\u0000-\u001F\u007F]+$"
    )]
    pub password: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// `POST /v1/sessions`: log in.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The email signed up with (any case).
    #[schema(max_length = 255)]
    pub email: String,
    /// The password signed up with.
    #[schema(max_length = 256, format = Password, pattern = r"^[^\u0000-\u001F\u007F]*$")]
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// `201` of `POST /v1/sessions`: a new bearer credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    /// Whose.
    pub user_id: i64,
    /// Bearer credential: `Authorization: Bearer <token>`.
    pub token: String,
    /// When the credential stops being accepted; log in again then.
    pub expires_at: DateTime<Utc>,
}

/// `201` of `POST /v1/users`: the user and their bearer credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// Name as stored (trimmed).
    pub name: String,
    /// Email as stored (lower case).
    pub email: String,
    /// Bearer credential: `Authorization: Bearer <token>`.
    pub token: String,
    /// When the credential stops being accepted; `POST /v1/sessions`
    /// issues a new one.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/users/{id}/balance/charge`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    /// Won to add, 1 to 10,000,000.
    #[serde(deserialize_with = "crate::numbers::whole")]
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub amount: i64,
}

/// `GET /v1/users/{id}/balance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Balance {
    /// Whose.
    pub user_id: i64,
    /// Won.
    pub balance: i64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One row of `GET /v1/users/{id}/balance/history` (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct BalanceEntry {
    /// The history row.
    pub id: i64,
    /// What changed the balance.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "sqlx", sqlx(rename = "type"))]
    pub kind: BalanceChange,
    /// Won added or taken; always positive.
    pub amount: i64,
    /// Balance after the change.
    pub balance_after: i64,
    /// Why, when the system says.
    pub reason: Option<String>,
    /// The payment involved, for USE and REFUND.
    pub payment_id: Option<i64>,
    /// When.
    pub created_at: DateTime<Utc>,
}
