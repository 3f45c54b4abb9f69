//! The guarantees of docs/design.md §4, checked from the outside against a stack's
//! Postgres and topics. `loadgen` runs [`invariants`] after every run; the
//! chaos run (`chaos`) runs all of them after its faults.
//!
//! - [`invariants`]: §4.4 in SQL (seats, balances, stock, stats, payments)
//!   plus the effects of each decided request applied exactly once.
//! - [`outcomes`]: every accepted request has exactly one business outcome.
//! - [`ambiguous`]: every keyed call that met a 503 or a cut connection
//!   comes to one request with exactly its effect.
//! - [`events`]: the event topics read from their start: every decided
//!   effect has its event, repeats are whole copies of one event id, and
//!   each key's events are in causal order.

#![warn(missing_docs)]

pub mod ambiguous;
pub mod events;
pub mod invariants;
pub mod outcomes;
