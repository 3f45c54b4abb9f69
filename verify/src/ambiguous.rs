//! Calls that met ambiguous answers before their `202`: a `503` after a
//! produce that may have reached the broker, or a connection cut with the
//! call already sent. Under one `Idempotency-Key` every retry is the same
//! request, so each such call must come to exactly one request id, decided,
//! with exactly the effect its outcome says: one row of its kind when it
//! SUCCEEDED, none otherwise.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// One call and the ambiguous answers its client met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The request id of the `202` the call finally got.
    pub request_id: Uuid,
    /// The `Idempotency-Key` every attempt carried.
    pub key: Option<String>,
    /// The ambiguous answers, in order (`503 KAFKA_UNAVAILABLE`, `cut: timeout`).
    pub answers: Vec<String>,
}

/// What resolving the calls found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resolution {
    /// Calls checked.
    pub calls: usize,
    /// Ambiguous answers they met in all.
    pub answers: usize,
    /// Calls resolved to one decided request with exactly its effect.
    pub resolved: usize,
    /// The calls that were not, and why.
    pub problems: Vec<String>,
}

/// Resolves each of `calls` against the stack's database.
pub async fn resolve(pool: &PgPool, calls: &[Call]) -> anyhow::Result<Resolution> {
    let mut resolution = Resolution {
        calls: calls.len(),
        answers: calls.iter().map(|c| c.answers.len()).sum(),
        ..Resolution::default()
    };
    let ids: Vec<Uuid> = calls.iter().map(|c| c.request_id).collect();
    // Per request: its status, and how many rows carry its effect (the
    // history row of a charge or payment, the order, the reservation a
    // hold names, the cancellation a cancel names).
    let rows = sqlx::query!(
        r#"SELECT q.id, q.type, q.status,
                  (SELECT count(*) FROM balance_histories h
                    WHERE h.request_id = q.id AND h.type IN ('CHARGE', 'USE')) AS "history!",
                  (SELECT count(*) FROM orders o WHERE o.request_id = q.id) AS "orders!",
                  (SELECT count(*) FROM reservations r
                    WHERE r.id = (q.result->>'reservation_id')::bigint AND r.user_id = q.user_id
                      AND (q.type <> 'reservation.cancel' OR r.status = 'CANCELLED')) AS "reservations!"
           FROM requests q WHERE q.id = ANY($1)"#,
        &ids
    )
    .fetch_all(pool)
    .await?;
    for call in calls {
        let row = rows.iter().find(|r| r.id == call.request_id);
        let problem = match row {
            None => Some("has no request row".to_owned()),
            Some(row) => {
                let effects = match row.r#type.as_str() {
                    "balance.charge" | "payment.pay" => row.history,
                    "order.place" => row.orders,
                    "reservation.hold" | "reservation.cancel" => row.reservations,
                    _ => 0,
                };
                let expected = i64::from(row.status == "SUCCEEDED");
                if row.status == "PENDING" || row.status == "FAILED" {
                    Some(format!("is {} ({})", row.status, row.r#type))
                } else if effects != expected {
                    Some(format!(
                        "{} {} with {effects} effects, not {expected}",
                        row.r#type, row.status
                    ))
                } else {
                    None
                }
            }
        };
        match problem {
            None => resolution.resolved += 1,
            Some(problem) => resolution.problems.push(format!(
                "a call with key {} after {:?}: request {} {problem}",
                call.key.as_deref().unwrap_or("(none)"),
                call.answers,
                call.request_id
            )),
        }
    }
    Ok(resolution)
}
