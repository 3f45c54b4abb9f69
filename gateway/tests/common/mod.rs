//! What the gateway's tests share besides the stack (a gateway alone,
//! [`testkit::stack::Options::without_workers`]): assertions on its error
//! answers and the set-ups several of them start from.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use serde_json::Value;
use testkit::api::User;
use testkit::stack::{Options, Stack};

/// A gateway alone over a fresh database and topics: accepted requests
/// stay PENDING.
pub(crate) async fn gateway() -> anyhow::Result<Stack> {
    Stack::start(Options::without_workers()).await
}

/// The `error.code` of an error body ("" for any other body).
pub(crate) fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Asserts that an answer `(status, body)` is the error `$status` with
/// `$code`; what follows the code (format arguments) names the case in the
/// failure message. Evaluates to the body, for checks of its other fields.
macro_rules! assert_error {
    ($answer:expr, $status:expr, $code:expr $(,)?) => {
        $crate::common::assert_error!($answer, $status, $code, "answer")
    };
    ($answer:expr, $status:expr, $code:expr, $($case:tt)+) => {{
        let (status, body): (::reqwest::StatusCode, ::serde_json::Value) = $answer;
        assert_eq!(
            (status, $crate::common::code(&body)),
            ($status, $code),
            "{}: {body}",
            format_args!($($case)+)
        );
        body
    }};
}
pub(crate) use assert_error;

/// `POST` path of a charge to `user`'s balance.
pub(crate) fn charge_path(user: &User) -> String {
    format!("/v1/users/{}/balance/charge", user.id)
}

/// A schedule of five seats, its first seat, and two users: `(schedule id,
/// seat id, alice, bob)`.
pub(crate) async fn seat_and_users(h: &Stack) -> anyhow::Result<(i64, i64, User, User)> {
    let schedule_id = h.api.create_schedule(5, 10_000).await?;
    let seat_id = h.api.seat_ids(schedule_id).await?[0];
    let alice = h.api.create_user("alice").await?;
    let bob = h.api.create_user("bob").await?;
    Ok((schedule_id, seat_id, alice, bob))
}
