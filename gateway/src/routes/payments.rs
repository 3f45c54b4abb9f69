//! Paying a held reservation from the balance (202), and payment reads.

use api::concert::{PayReservation, Payment};
use api::status::{PaymentMethod, PaymentStatus};
use api::Paged;
use axum::extract::State;
use axum::Json;
use schemas::requests;
use schemas::Request;

use crate::auth::ReadableUser;
use crate::error::ApiResult;
use crate::extract::{ApiJson, QueueTokenHeader};
use crate::publish::{Accepted, Intake};
use crate::routes::page::NewestFirst;
use crate::routes::queue::require_active_token;
use crate::routes::{accessible, reservations};
use crate::state::AppState;

/// Pays the caller's held reservation from their balance (needs the
/// caller's ACTIVE queue token for its schedule).
#[utoipa::path(post, path = "/v1/payments", operation_id = "pay_reservation", tag = "payments", request_body = PayReservation,
    params(crate::openapi::IdempotencyKey, crate::extract::QueueTokenHeader),
    security(("user" = [])),
    responses(Accepted))]
pub(crate) async fn pay(
    intake: Intake,
    token: QueueTokenHeader,
    ApiJson(body): ApiJson<PayReservation>,
) -> ApiResult<Accepted> {
    intake
        .accept(&body, async |intake| {
            let reservation = accessible(
                intake.user(),
                reservations::find(intake.state(), body.reservation_id).await?,
            )?;
            let queue_token = require_active_token(
                intake.state(),
                token,
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
    params(ReadableUser, NewestFirst),
    security(("user" = []), ("admin" = [])),
    responses((status = 200, description = "A page of payments", body = Paged<Payment>)))]
pub(crate) async fn list_for_user(
    State(state): State<AppState>,
    user: ReadableUser,
    NewestFirst(page): NewestFirst,
) -> ApiResult<Json<Paged<Payment>>> {
    let rows = sqlx::query_as!(
        Payment,
        r#"SELECT id, user_id, reservation_id, order_id, amount,
                method AS "method: PaymentMethod", status AS "status: PaymentStatus",
                paid_at, refunded_at, created_at
         FROM payments WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"#,
        user.id,
        page.past,
        page.fetch(),
    )
    .fetch_all(&state.pool);
    page.answer(rows, |p| p.id).await
}
