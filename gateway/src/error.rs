//! The one place that turns gateway failures into HTTP responses. Clients get
//! a stable code; logs get the cause.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Every way a gateway call can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON of the expected shape.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// A field breaks a rule.
    #[error("{field}: {message}")]
    Validation {
        /// The offending field: a body path (`items[1].quantity`), a path
        /// or query parameter, or a header.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The body is larger than allowed.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Missing or bad bearer credential.
    #[error("missing or invalid credential")]
    Unauthorized,
    /// The caller may not touch this resource.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The `X-Queue-Token` header is missing.
    #[error("X-Queue-Token header is required")]
    QueueTokenRequired,
    /// The queue token is unknown, not ACTIVE, expired, for another schedule
    /// or another user.
    #[error("queue token not usable: {0}")]
    QueueTokenInvalid(&'static str),
    /// The referenced entity does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The entity exists already.
    #[error("{message}")]
    Conflict {
        /// Stable code, for example `EMAIL_TAKEN`.
        code: &'static str,
        /// Explanation.
        message: String,
    },
    /// The `Idempotency-Key` was used before for a call with another body.
    #[error("this Idempotency-Key was used for another request")]
    IdempotencyKeyReused,
    /// A call with this `Idempotency-Key` is being accepted right now.
    #[error("a call with this Idempotency-Key is in progress; retry")]
    IdempotencyKeyInUse,
    /// A text field holds a NUL or another control character.
    #[error("{field}: text must not contain control characters (U+0000 to U+001F, U+007F)")]
    InvalidText {
        /// Where: a JSON path into the body, or `query`.
        field: String,
    },
    /// A queue token was polled sooner than its last answer asked.
    #[error("polled too soon: ask again in {} ms", .0.as_millis())]
    PolledTooSoon(std::time::Duration),
    /// Too many sign-ups or logins from this client or for this account.
    #[error("too many attempts: try again in {} s", .0.as_millis().div_ceil(1000).max(1))]
    RateLimited(std::time::Duration),
    /// The email and password of a login do not match a user (which of
    /// the two is wrong is not said).
    #[error("email or password is wrong")]
    InvalidCredentials,
    /// Kafka did not acknowledge in time: the request was not accepted.
    #[error("kafka unavailable")]
    KafkaUnavailable(#[source] platform::kafka::ProduceError),
    /// A database failure.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Anything else.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// Shorthand for a validation failure.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "INVALID_JSON"),
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            ApiError::QueueTokenRequired => (StatusCode::UNAUTHORIZED, "QUEUE_TOKEN_REQUIRED"),
            ApiError::QueueTokenInvalid(_) => (StatusCode::FORBIDDEN, "QUEUE_TOKEN_INVALID"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
            }
            ApiError::IdempotencyKeyInUse => (StatusCode::CONFLICT, "IDEMPOTENCY_KEY_IN_USE"),
            ApiError::InvalidText { .. } => (StatusCode::BAD_REQUEST, "INVALID_TEXT"),
            ApiError::PolledTooSoon(_) => (StatusCode::TOO_MANY_REQUESTS, "POLLED_TOO_SOON"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            ApiError::KafkaUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "KAFKA_UNAVAILABLE"),
            ApiError::Database(e) => match platform::db::classify(e) {
                platform::db::ErrorClass::Unavailable => {
                    (StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE")
                }
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            },
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let field = match &self {
            ApiError::Validation { field, .. } | ApiError::InvalidText { field } => {
                Some(field.clone())
            }
            _ => None,
        };
        let body = api::ErrorBody {
            error: api::ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                field,
            },
        };
        if status.is_server_error() {
            tracing::error!(error = ?self, code, "request failed");
        }
        let mut response = (status, Json(body)).into_response();
        if let ApiError::PolledTooSoon(left) | ApiError::RateLimited(left) = &self {
            // Whole seconds, rounded up: a client that waits them is on time.
            let secs = left.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE
            || matches!(self, ApiError::IdempotencyKeyInUse)
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
