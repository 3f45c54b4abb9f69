//! Every message that crosses Kafka in this system, the topic names, and the
//! JSON Schema export for them, and the AsyncAPI document of the whole event
//! contract ([`asyncapi::document`]). Pure data: no I/O lives here.
//!
//! Nothing outside this crate spells a topic name; other crates ask [`Topic`]
//! and [`TopicNames`].

#![warn(missing_docs)]

pub mod asyncapi;
pub mod codes;
pub mod events;
pub mod requests;
pub mod topics;

pub use codes::ErrorCode;
pub use events::{Event, EventEnvelope};
pub use requests::{Request, RequestEnvelope, TopicRequest};
pub use topics::{Topic, TopicNames};

/// Kafka header carrying the request id of a request record (and of the
/// request that caused an event).
pub const HEADER_REQUEST_ID: &str = "request-id";
/// Kafka header carrying the event id of an event record (consumers
/// deduplicate by it).
pub const HEADER_EVENT_ID: &str = "event-id";
/// W3C trace context header.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header on a dead-lettered record: why it was rejected.
pub const HEADER_DLQ_REASON: &str = "dlq-reason";
/// Header on a dead-lettered record: topic, partition and offset it came from.
pub const HEADER_DLQ_ORIGIN: &str = "dlq-origin";
/// Header on a request record re-driven from its dead-letter topic
/// (`workers dlq replay`): the dead letter's topic, partition and offset.
pub const HEADER_DLQ_REPLAYED_FROM: &str = "dlq-replayed-from";

/// The W3C trace id of a request: its id's 32 hex digits, so a request
/// can be followed across gateway, broker and workers by either.
pub fn trace_id_for(request_id: uuid::Uuid) -> String {
    request_id.simple().to_string()
}

/// Builds a W3C `traceparent` value whose trace id is the request id
/// ([`trace_id_for`]).
pub fn traceparent_for(request_id: uuid::Uuid) -> String {
    let trace = trace_id_for(request_id);
    let span = &trace[..16];
    format!("00-{trace}-{span}-01")
}

/// Every JSON Schema this crate exports, by file name.
pub fn json_schemas() -> Vec<(&'static str, serde_json::Value)> {
    let to_value = |schema: schemars::Schema| schema.to_value();
    vec![
        (
            "request-envelope.json",
            to_value(schemars::schema_for!(RequestEnvelope)),
        ),
        (
            "event-envelope.json",
            to_value(schemars::schema_for!(EventEnvelope)),
        ),
    ]
}
