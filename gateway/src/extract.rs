//! Extractors whose rejections use the gateway's error codes, and the body
//! limit in front of them.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::validate::Validate;

/// Like `axum::Json`, but bad bodies become `INVALID_JSON` (400),
/// `INVALID_TEXT` (400, a NUL character anywhere in a string, which no
/// Postgres text column stores, or a control character in a text field)
/// or `VALIDATION_FAILED` (422: the wrong shape, or a broken rule of the
/// body's [`Validate`]). Too large a body never gets here: [`limit_body`]
/// answers it.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::InvalidJson(
                "expected Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::InvalidJson("the body could not be read".into()))?;
        if let Some(field) = nul_in_text(&bytes) {
            return Err(ApiError::InvalidText { field });
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => {
                value.validate()?;
                Ok(ApiJson(value))
            }
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::invalid("body", e.body_text()),
                JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
                other => ApiError::InvalidJson(other.body_text()),
            }),
        }
    }
}

fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5 && essence.to_ascii_lowercase().ends_with("+json"))
}

/// Where a JSON body holds a NUL character inside a string (or a key), as a
/// path like `items[1].size`; `body` when the bytes hold a raw NUL. Cheap
/// for the common case: only a body that contains `\u0000` is parsed twice.
fn nul_in_text(bytes: &[u8]) -> Option<String> {
    if bytes.contains(&0) {
        return Some("body".into());
    }
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    fn walk(value: &serde_json::Value, path: &str) -> Option<String> {
        match value {
            serde_json::Value::String(s) if s.contains('\0') => Some(path.to_owned()),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, &format!("{path}[{i}]"))),
            serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                if key.contains('\0') {
                    return Some(if path.is_empty() {
                        "body".into()
                    } else {
                        path.to_owned()
                    });
                }
                walk(item, &here)
            }),
            _ => None,
        }
    }
    walk(&value, "").map(|p| if p.is_empty() { "body".into() } else { p })
}

/// Like `axum::extract::Path`, but a malformed id is a `VALIDATION_FAILED`
/// naming the path parameter.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid("path", rejection.body_text())
    }
}

/// Like `axum::extract::Query`, with the gateway's error codes.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default();
        if raw.contains('\0') || raw.to_ascii_lowercase().contains("%00") {
            return Err(ApiError::InvalidText {
                field: "query".into(),
            });
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}

/// The `X-Queue-Token` header of holds and payments: present and a UUID,
/// checked before anything else of the call (a keyed retry without it is
/// refused like a first call, not answered from the first call's outcome).
/// Whether the token is usable is the handler's look-up.
#[derive(Debug, Clone, Copy, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct QueueTokenHeader {
    /// The caller's ACTIVE queue token for the seat's schedule.
    #[param(rename = "X-Queue-Token")]
    x_queue_token: uuid::Uuid,
}

impl QueueTokenHeader {
    /// The token.
    pub fn token(self) -> uuid::Uuid {
        self.x_queue_token
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueueTokenHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts
            .headers
            .get("x-queue-token")
            .ok_or(ApiError::QueueTokenRequired)?;
        raw.to_str()
            .ok()
            .and_then(|raw| uuid::Uuid::parse_str(raw.trim()).ok())
            .map(|x_queue_token| Self { x_queue_token })
            .ok_or(ApiError::QueueTokenInvalid("malformed"))
    }
}

/// Bodies up to this many bytes past the limit are read and thrown away
/// before the 413 is sent: a client that writes its whole body before it
/// reads (Python httpx, many JVM clients) then reads the 413 instead of a
/// connection reset. Larger ones are refused unread.
const DRAIN_BEYOND_LIMIT: usize = 1024 * 1024;

/// Middleware: buffers the body up to `max` bytes for the handlers; a
/// larger body is answered `413 PAYLOAD_TOO_LARGE` after a bounded drain
/// (the connection is then closed).
pub async fn limit_body(
    axum::extract::State(max): axum::extract::State<usize>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        let mut response = ApiError::PayloadTooLarge.into_response();
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        response
    };
    if declared.is_some_and(|n| n > max + DRAIN_BEYOND_LIMIT) {
        return too_large();
    }
    let (parts, mut body) = request.into_parts();
    let mut kept: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return ApiError::InvalidJson("the body could not be read".into()).into_response();
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= max {
                kept.extend_from_slice(&data);
            } else if seen > max + DRAIN_BEYOND_LIMIT {
                break;
            }
        }
    }
    if seen > max {
        return too_large();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(kept)))
        .await
}
