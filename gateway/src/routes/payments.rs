//! Paying a held reservation from the balance (202), and payment reads.

use api::concert::{PayReservation, Payment};
use api::{Accepted, Cursor, Paged};
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use schemas::requests;
use schemas::Request;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::publish::Intake;
use crate::routes::queue::require_active_token;
use crate::routes::{page, reservations};
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pay))
        .routes(routes!(list_for_user))
}

/// Pays the caller's held reservation from their balance (needs the
/// caller's ACTIVE queue token for its schedule).
#[utoipa::path(post, path = "/v1/payments", operation_id = "pay_reservation", tag = "payments", request_body = PayReservation,
    params(crate::openapi::IdempotencyKey, crate::openapi::QueueToken),
    security(("user" = [])),
    responses((status = 202, description = "Accepted: poll Location for the outcome",
               body = Accepted, headers(("Location" = String, description = "/v1/requests/{request_id}")))))]
async fn pay(intake: Intake, ApiJson(body): ApiJson<PayReservation>) -> ApiResult<Response> {
    intake
        .accept(&body, async |intake| {
            let reservation = reservations::find(intake.state(), body.reservation_id).await?;
            intake.user().require_self(reservation.owner())?;
            let queue_token = require_active_token(
                intake.state(),
                intake.headers(),
                intake.user_id(),
                reservation.schedule_id(),
            )
            .await?;
            Ok(Request::PayReservation(requests::PayReservation {
                reservation_id: body.reservation_id,
                user_id: intake.user_id(),
                queue_token,
            }))
        })
        .await
}

/// A user's payments, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/payments", operation_id = "list_payments", tag = "payments",
    params(("id" = i64, Path, description = "The user"), Cursor),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "A page of payments", body = Paged<Payment>)))]
async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(cursor): ApiQuery<Cursor>,
) -> ApiResult<Json<Paged<Payment>>> {
    caller.require_access(user_id)?;
    let (limit, before) = page::backward(&cursor)?;
    let rows: Vec<Payment> = sqlx::query_as(
        "SELECT id, user_id, reservation_id, order_id, amount, method, status, paid_at,
                refunded_at, created_at
         FROM payments WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(Paged::from_rows(rows, limit, |p| p.id)))
}
