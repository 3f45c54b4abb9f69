//! The OpenAPI 3.1 document, derived from the routes and the `api` types:
//! served at `GET /openapi.json`, written to `docs/openapi.json` by
//! `gateway openapi` (a test fails when the committed file differs).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, PathItem, RefOr, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi as _, PartialSchema};

/// The `Idempotency-Key` header of the state-changing calls.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// Makes a retry the same request: a repeat within the retention
    /// (`REQUEST_RETENTION_DAYS`) answers the first call's request id and
    /// status. Scoped by caller and route; the same key with another body
    /// or path is refused (422 `IDEMPOTENCY_KEY_REUSED`); while the first
    /// call is being accepted, a repeat is told to retry (409
    /// `IDEMPOTENCY_KEY_IN_USE`). 1 to 255 visible ASCII characters.
    #[param(rename = "Idempotency-Key", value_type = String, required = false,
        min_length = 1, max_length = 255, pattern = r"^[!-~]+$")]
    idempotency_key: Option<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Booking and shop gateway",
        description = "Concert booking and a shop on Kafka lanes. State-changing calls answer \
            `202 Accepted` with a request id once the request is durable in Kafka; \
            `GET /v1/requests/{id}` (optionally long-polling with `wait_ms`) tells the outcome. \
            Every error answers `{\"error\": {\"code\", \"message\", \"field\"?}}` with a stable \
            code. A `503` or a `409 IDEMPOTENCY_KEY_IN_USE` carries `Retry-After`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(api::ErrorBody, api::Accepted))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str, format: Option<&str>| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.bearer_format = format.map(str::to_owned);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            "user",
            bearer("A user's credential, as `POST /v1/users` (sign-up) or `POST /v1/sessions` (login) answered it: a JWT (HS256) that expires at its `expires_at`; log in again for a new one.", Some("JWT")),
        );
        components.add_security_scheme(
            "admin",
            bearer(
                "The admin credential (`ADMIN_TOKEN`); reads accept it for any user.",
                None,
            ),
        );
    }
}

/// Adds the error answers every operation can give, each with the error
/// body, without replacing what an operation states itself.
struct Errors;

impl Modify for Errors {
    fn modify(&self, openapi: &mut OpenApi) {
        let answers: [(&str, &str, bool); 9] = [
            ("BadInput", "Malformed input: `INVALID_JSON` (not JSON, wrong Content-Type), `INVALID_TEXT` (a control character in text; `field` says where)", false),
            ("Unauthorized", "`UNAUTHORIZED`: no or a bad credential; `QUEUE_TOKEN_REQUIRED`", false),
            ("Forbidden", "`FORBIDDEN`: another user's resource; `QUEUE_TOKEN_INVALID`", false),
            ("NotFound", "`NOT_FOUND`: the resource, or one the call names, does not exist", false),
            ("Conflict", "`IDEMPOTENCY_KEY_IN_USE`: retry after `Retry-After`", true),
            ("PayloadTooLarge", "`PAYLOAD_TOO_LARGE`: the body is over `MAX_BODY_BYTES`", false),
            ("Invalid", "`VALIDATION_FAILED` (`field` says which); `IDEMPOTENCY_KEY_REUSED`", false),
            ("Internal", "`INTERNAL`: a defect; the cause is logged", false),
            ("Unavailable", "`DATABASE_UNAVAILABLE` or `KAFKA_UNAVAILABLE`: nothing was accepted; retry after `Retry-After`", true),
        ];
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description, retry) in answers {
            let mut response = ResponseBuilder::new().description(description).content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(RefOr::<utoipa::openapi::Schema>::Ref(
                        utoipa::openapi::Ref::from_schema_name("ErrorBody"),
                    )))
                    .build(),
            );
            if retry {
                response = response.header(
                    "Retry-After",
                    utoipa::openapi::HeaderBuilder::new()
                        .schema(Some(u64::schema()))
                        .description(Some("Seconds to wait before retrying"))
                        .build(),
                );
            }
            components
                .responses
                .insert(name.to_owned(), RefOr::T(response.build()));
        }
        for (_, item) in openapi.paths.paths.iter_mut() {
            for operation in operations(item) {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let has_body = operation.request_body.is_some();
                let accepts = operation.responses.responses.contains_key("202");
                let mut statuses = vec![("400", "BadInput"), ("404", "NotFound")];
                if secured {
                    statuses.extend([("401", "Unauthorized"), ("403", "Forbidden")]);
                }
                if accepts {
                    statuses.push(("409", "Conflict"));
                }
                if has_body {
                    statuses.push(("413", "PayloadTooLarge"));
                }
                statuses.extend([
                    ("422", "Invalid"),
                    ("500", "Internal"),
                    ("503", "Unavailable"),
                ]);
                for (status, name) in statuses {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::Ref(utoipa::openapi::Ref::new(format!(
                                "#/components/responses/{name}"
                            )))
                        });
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The whole document: the routes' paths and schemas, the error answers,
/// the security schemes.
pub fn document() -> OpenApi {
    let (_, paths) = crate::routes::router().split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(paths);
    Security.modify(&mut doc);
    Errors.modify(&mut doc);
    doc
}

/// [`document`] as the JSON `docs/openapi.json` holds (pretty, newline at
/// the end).
pub fn document_json() -> String {
    let mut json = document().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}
