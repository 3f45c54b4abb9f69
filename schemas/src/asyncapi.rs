//! The event contract as an [AsyncAPI 3.0] document: every topic of
//! [`Topic::ALL`] and the dead-letter topics, their record keys and headers,
//! and one message per request and event type, with schemas generated from
//! the types of this crate (the same ones the services serialize).
//!
//! [`document`] builds it; `schemas/tests/asyncapi.rs` renders it as YAML and
//! fails while the committed `docs/asyncapi.yaml` differs (`./dev asyncapi`
//! rewrites it, `./dev asyncapi --check` validates it with the AsyncAPI CLI).
//! The schemas describe records as the services write them (schemars'
//! serialize contract), in JSON Schema draft 7, the dialect AsyncAPI's default
//! schema format extends.
//!
//! [AsyncAPI 3.0]: https://www.asyncapi.com/docs/reference/specification/v3.0.0

use chrono::{DateTime, NaiveDate, Utc};
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::events::{
    BalanceChangeKind, BalanceChanged, OrderPaid, OrderPaidItem, PaymentChanged, ProductDailyStats,
    ReservationChanged, EVENT_VERSION,
};
use crate::requests::{
    CancelReservation, ChargeBalance, ExpireHold, HoldSeat, OrderLine, PayReservation, PlaceOrder,
    REQUEST_VERSION,
};
use crate::{
    traceparent_for, Event, EventEnvelope, Request, RequestEnvelope, Topic, TopicNames,
    HEADER_DLQ_ORIGIN, HEADER_DLQ_REASON, HEADER_DLQ_REPLAYED_FROM, HEADER_EVENT_ID,
    HEADER_REQUEST_ID, HEADER_TRACEPARENT,
};

/// The AsyncAPI version the document follows.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// Version of the Kafka bindings the document uses.
const KAFKA_BINDING_VERSION: &str = "0.5.0";
/// Id of the dead-letter message (the same on every dead-letter topic).
pub const DEAD_LETTER_MESSAGE: &str = "dead-letter";

/// An AsyncAPI document. Its top-level fields keep the specification's
/// order when rendered; everything below is JSON (keys sorted).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// The AsyncAPI version.
    pub asyncapi: &'static str,
    /// Title, version, the delivery promise.
    pub info: Value,
    /// Content type of every message that does not state its own.
    pub default_content_type: &'static str,
    /// The brokers of the local stacks.
    pub servers: Value,
    /// One channel per topic, by topic base name.
    pub channels: Value,
    /// What the system sends and receives on each channel.
    pub operations: Value,
    /// Messages, schemas and correlation ids the rest refers to.
    pub components: Value,
}

/// The event contract: topics, keys, headers, messages and the delivery
/// promise, as an AsyncAPI 3.0 document.
pub fn document() -> Document {
    let mut generator = SchemaSettings::draft07()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .for_serialize()
        .into_generator();
    let event_root = generator.root_schema_for::<EventEnvelope>().to_value();
    let request_root = generator.root_schema_for::<RequestEnvelope>().to_value();
    let mut schemas = generator.take_definitions(true);

    let (event_envelope, event_variants) = split_envelope(event_root, EVENT_TYPE, EVENT_PAYLOAD);
    let (request_envelope, request_variants) =
        split_envelope(request_root, REQUEST_TYPE, REQUEST_PAYLOAD);
    schemas.insert("EventEnvelope".into(), event_envelope);
    schemas.insert("RequestEnvelope".into(), request_envelope);
    schemas.insert("EventHeaders".into(), event_headers());
    schemas.insert("RequestHeaders".into(), request_headers());
    schemas.insert("DeadLetterHeaders".into(), dead_letter_headers());
    schemas.insert("DeadLetter".into(), dead_letter_payload());

    let mut messages = Map::new();
    // Message ids per topic, in declaration order.
    let mut by_topic: Vec<(Topic, Vec<String>)> = Topic::ALL.iter().map(|t| (*t, vec![])).collect();
    let mut add = |topic: Topic, id: String, message: Value| {
        if let Some((_, ids)) = by_topic.iter_mut().find(|(t, _)| *t == topic) {
            ids.push(id.clone());
        }
        messages.insert(id, message);
    };

    for example in request_examples() {
        let type_name = example.request.type_name();
        let headers = json!({
            HEADER_REQUEST_ID: example.request_id.to_string(),
            HEADER_TRACEPARENT: traceparent_for(example.request_id),
        });
        let message = Message {
            type_name,
            topic: example.request.topic(),
            key: example.request.key(),
            kind: "Request",
            variant: request_variants.get(type_name),
            headers,
            correlated: true,
            example: json!(example),
        };
        add(
            message.topic,
            type_name.to_owned(),
            message.render(&mut schemas),
        );
    }

    for example in event_examples() {
        let type_name = example.event.type_name();
        let mut headers = Map::new();
        headers.insert(HEADER_EVENT_ID.into(), example.event_id.to_string().into());
        if let Some(request_id) = example.request_id {
            headers.insert(HEADER_REQUEST_ID.into(), request_id.to_string().into());
            headers.insert(
                HEADER_TRACEPARENT.into(),
                traceparent_for(request_id).into(),
            );
        }
        let message = Message {
            type_name,
            topic: example.event.topic(),
            key: example.event.key(),
            kind: "Event",
            variant: event_variants.get(type_name),
            headers: headers.into(),
            // Events no request caused (the stats lane's totals) have no
            // request id to correlate by.
            correlated: example.request_id.is_some(),
            example: json!(example),
        };
        add(
            message.topic,
            type_name.to_owned(),
            message.render(&mut schemas),
        );
    }
    messages.insert(DEAD_LETTER_MESSAGE.into(), dead_letter_message());

    let partitions: Vec<(String, i32)> = TopicNames::default().all_with_partitions();
    let partitions_of = |name: &str| {
        partitions
            .iter()
            .find(|(n, _)| n == name)
            .map_or(1, |(_, p)| *p)
    };
    let mut channels = Map::new();
    let mut operations = Map::new();
    for (topic, ids) in &by_topic {
        let about = about(*topic);
        let name = topic.base_name();
        let channel_messages: Map<String, Value> = ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    json!({ "$ref": format!("#/components/messages/{id}") }),
                )
            })
            .collect();
        let kind = if topic.is_request_topic() {
            "request"
        } else {
            "event"
        };
        let mut description = format!(
            "{}\n\n**Key**: the payload's `{}` as decimal text, so every record of one {} is on \
             one partition, in order.\n\n**Headers**: {}.\n\n**Written by** {}\n\n**Read by** {}",
            about.description,
            topic.key_field(),
            key_noun(*topic),
            if topic.is_request_topic() {
                "`request-id` and `traceparent` (see `RequestHeaders`)"
            } else {
                "`event-id`, and `request-id` and `traceparent` when a request caused the event \
                 (see `EventHeaders`)"
            },
            about.sent_by,
            about.reader.read_by(),
        );
        if topic.is_request_topic() {
            description.push_str(&format!(
                "\n\nDefault partition count {}; `KAFKA_REQUEST_PARTITIONS` chooses another when \
                 the topic is created. Internal: lanes read these records; outside readers want \
                 the event topics.",
                partitions_of(name)
            ));
        }
        description.push_str(&format!("\n\n{PREFIX_NOTE}"));
        channels.insert(
            name.into(),
            json!({
                "address": name,
                "title": about.title,
                "summary": about.summary,
                "description": description,
                "messages": channel_messages,
                "bindings": { "kafka": {
                    "partitions": partitions_of(name),
                    "bindingVersion": KAFKA_BINDING_VERSION,
                } },
            }),
        );
        let refs = |channel: &str| -> Vec<Value> {
            ids.iter()
                .map(|id| json!({ "$ref": format!("#/channels/{channel}/messages/{id}") }))
                .collect()
        };
        operations.insert(
            format!("send{}", pascal(name)),
            Operation {
                action: "send",
                channel: name,
                title: format!("Publish {name}"),
                summary: format!("The system publishes {kind} records to `{name}`."),
                description: sentence(about.sent_by),
                messages: refs(name).into(),
            }
            .render(),
        );
        let lane = about.reader.lane();
        if let Some((_, received_by)) = &lane {
            operations.insert(
                format!("receive{}", pascal(name)),
                Operation {
                    action: "receive",
                    channel: name,
                    title: format!("Consume {name}"),
                    summary: format!("The system consumes `{name}`."),
                    description: received_by.clone(),
                    messages: refs(name).into(),
                }
                .render(),
            );
        }

        if let Some((lane, _)) = lane.filter(|_| topic.has_dlq()) {
            let dlq = format!("{name}.dlq");
            channels.insert(
                dlq.clone(),
                json!({
                    "address": dlq,
                    "title": format!("Dead letters of {name}"),
                    "summary": format!("Records of `{name}` that its lane could not decode or validate."),
                    "description": format!(
                        "{} the {lane} lane cannot decode or validate is copied here, value and key unchanged, \
                         with the `dlq-reason` and `dlq-origin` headers (see \
                         `DeadLetterHeaders`; the original record's headers are not copied), \
                         and the lane moves on. {}\n\n**Read by** operators: `workers dlq list \
                         --topic {name}`, `workers dlq show`, and `workers dlq replay`, which \
                         re-publishes a dead letter to `{name}` under its original key (with \
                         the `dlq-replayed-from` header).\n\n{PREFIX_NOTE}",
                        if topic.is_request_topic() {
                            format!("A record of `{name}`")
                        } else {
                            "An `order.paid` record".to_owned()
                        },
                        if topic.is_request_topic() {
                            "A request that carried a readable request id is recorded `FAILED` \
                             with `INVALID_REQUEST`; one the lane fails on through a bug is \
                             recorded `FAILED` with `INTERNAL` and copied here too."
                        } else {
                            "Its order is not counted in the daily stats unless it is re-driven."
                        },
                    ),
                    "messages": {
                        DEAD_LETTER_MESSAGE: { "$ref": format!("#/components/messages/{DEAD_LETTER_MESSAGE}") },
                    },
                    "bindings": { "kafka": {
                        "partitions": partitions_of(&dlq),
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    } },
                }),
            );
            let dead_letter_ref =
                json!([{ "$ref": format!("#/channels/{dlq}/messages/{DEAD_LETTER_MESSAGE}") }]);
            operations.insert(
                format!("send{}Dlq", pascal(name)),
                Operation {
                    action: "send",
                    channel: &dlq,
                    title: format!("Dead-letter {name}"),
                    summary: format!("The lane consuming `{name}` sets aside what it cannot apply."),
                    description: format!(
                        "The {lane} lane copies each record it cannot decode or validate (or fails on \
                         through a bug) here with the reason, once, and goes on with the next.",
                    ),
                    messages: dead_letter_ref.clone(),
                }
                .render(),
            );
            operations.insert(
                format!("receive{}Dlq", pascal(name)),
                Operation {
                    action: "receive",
                    channel: &dlq,
                    title: format!("Read the dead letters of {name}"),
                    summary: "Operators list, show and re-drive dead letters.".into(),
                    description: "`workers dlq list`, `workers dlq show` and `workers dlq \
                        replay` read this topic from its start (no consumer group)."
                        .into(),
                    messages: dead_letter_ref,
                }
                .render(),
            );
        }
    }

    Document {
        asyncapi: ASYNCAPI_VERSION,
        info: json!({
            "title": "Booking and shop events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": INFO_DESCRIPTION,
            "license": {
                "name": "Apache-2.0",
                "url": "https://www.apache.org/licenses/LICENSE-2.0",
            },
        }),
        default_content_type: "application/json",
        servers: json!({
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "title": "Local stack",
                "description": "The Apache Kafka node `./dev up` starts (KRaft, one broker \
                    and controller). Any Kafka client reads it, Debian's kcat among them.",
            },
            "compose": {
                "host": "127.0.0.1:9094",
                "protocol": "kafka",
                "title": "Docker Compose stack",
                "description": "Apache Kafka of `docker compose up`, as the host sees it \
                    (containers use `kafka:9092`).",
            },
        }),
        channels: Value::Object(channels),
        operations: Value::Object(operations),
        components: json!({
            "schemas": schemas,
            "messages": messages,
            "correlationIds": {
                "request": {
                    "description": "The request a record belongs to: the request id the \
                        gateway answered with `202` (`GET /v1/requests/{id}` shows its outcome).",
                    "location": format!("$message.header#/{HEADER_REQUEST_ID}"),
                },
            },
        }),
    }
}

const INFO_DESCRIPTION: &str = "\
The Kafka records of the booking and shop backend: the requests the gateway publishes \
for the lanes, the result events the lanes emit through their outbox, and the dead \
letters. Generated from the `schemas` crate (`schemas::asyncapi::document`); \
`./dev asyncapi` rewrites this file and `schemas/tests/asyncapi.rs` fails while it \
differs from the code.

## Reading the events

Subscribe to `reservation-events`, `payment-events`, `balance-events`, `order-events` \
or `product-daily-stats` with a consumer group of your own (the `booking-*` groups \
are the system's own). A record's value is a JSON envelope `{\"event_id\", \"type\", \
\"version\", \"timestamp\", \"request_id\"?, \"payload\"}`; `type` says which payload \
follows (one message per type below).

## The delivery promise

- **At least once.** Every event committed with its change is published; a record \
may repeat (a relay that lost its lease mid-round: at most the one round of up to \
1,000 records in flight is published again), always as a whole copy with the same \
`event_id` and value.
- **In order per key.** Every record of one key (seat id, user id or product id: \
see each channel) is on one partition, in the order the changes committed. There \
is no order across keys, partitions or topics.
- **Deduplicate by `event_id`.** The `event-id` header equals the envelope's \
`event_id` (a UUIDv7), so a repeat can be dropped before the value is parsed. \
Dropping every `event_id` already seen leaves each key's events in order. A reader \
whose effects must happen once records the ids it applied with its effects.
- **Versioned payloads.** `version` is the payload's schema version (1 today). \
Fields may be added within a version, so ignore fields (and `type`s) you do not \
know; a field removed, renamed or retyped comes with a new version.

## Names and headers

Each channel's address is the topic's base name. A deployment may put a prefix \
(`TOPIC_PREFIX`) before every topic and consumer group name: with `TOPIC_PREFIX=stage-` \
the events of seats are on `stage-reservation-events`. Header values are UTF-8 text. \
Request records carry `request-id` and `traceparent` (W3C, its trace id is the request \
id); event records carry `event-id`, and `request-id` and `traceparent` of the request \
that caused them (all but `product.daily_stats`); dead letters carry `dlq-reason` and \
`dlq-origin` only.";

const PREFIX_NOTE: &str = "The address is the base name; a deployment's `TOPIC_PREFIX` \
                           (empty by default) precedes it.";

/// Type and payload properties of the generic envelopes.
const EVENT_TYPE: &str = "Names the event, e.g. `reservation.held`; one message per type.";
const EVENT_PAYLOAD: &str = "The event's data; its shape depends on `type`.";
const REQUEST_TYPE: &str = "Names the request, e.g. `balance.charge`; one message per type.";
const REQUEST_PAYLOAD: &str = "The request's data; its shape depends on `type`.";

/// Splits the root schema of an envelope with a flattened adjacently tagged
/// enum into the envelope every type shares (`type` a string, `payload` an
/// object) and the variants (`type` constant, `payload` a reference) by type.
fn split_envelope(
    root: Value,
    type_description: &str,
    payload_description: &str,
) -> (Value, Map<String, Value>) {
    let Value::Object(mut envelope) = root else {
        return (root, Map::new());
    };
    let variants = match envelope.remove("oneOf") {
        Some(Value::Array(variants)) => variants,
        _ => Vec::new(),
    };
    envelope.remove("components");
    envelope.remove("title");
    if let Some(Value::Object(properties)) = envelope.get_mut("properties") {
        properties.insert(
            "type".into(),
            json!({ "type": "string", "description": type_description }),
        );
        properties.insert(
            "payload".into(),
            json!({ "type": "object", "description": payload_description }),
        );
    }
    if let Some(Value::Array(required)) = envelope.get_mut("required") {
        for field in ["type", "payload"] {
            if !required.iter().any(|r| r == field) {
                required.push(field.into());
            }
        }
    }
    let by_type = variants
        .into_iter()
        .filter_map(|variant| {
            let name = variant
                .pointer("/properties/type/const")?
                .as_str()?
                .to_owned();
            Some((name, variant))
        })
        .collect();
    (Value::Object(envelope), by_type)
}

/// One operation of the document: the system sends to or receives from a
/// channel.
struct Operation<'a> {
    /// "send" or "receive".
    action: &'static str,
    channel: &'a str,
    title: String,
    summary: String,
    description: String,
    /// References to the channel's messages it carries.
    messages: Value,
}

impl Operation<'_> {
    fn render(self) -> Value {
        json!({
            "action": self.action,
            "channel": { "$ref": format!("#/channels/{}", self.channel) },
            "title": self.title,
            "summary": self.summary,
            "description": self.description,
            "messages": self.messages,
        })
    }
}

/// One message type of a topic, with its example record.
struct Message<'a> {
    /// Its `type`.
    type_name: &'static str,
    topic: Topic,
    /// The example's record key.
    key: String,
    /// "Request" or "Event": its envelope, and its schema's suffix.
    kind: &'static str,
    /// Its variant of the envelope's payload schema.
    variant: Option<&'a Value>,
    /// The example's headers.
    headers: Value,
    /// Whether it carries the request id to correlate by.
    correlated: bool,
    /// The example record.
    example: Value,
}

impl Message<'_> {
    /// The message object; adds its payload schema to `schemas`.
    fn render(self, schemas: &mut Map<String, Value>) -> Value {
        let schema_name = format!("{}{}", pascal(self.type_name), self.kind);
        let envelope = format!("{}Envelope", self.kind);
        schemas.insert(schema_name.clone(), typed_envelope(&envelope, self.variant));
        let mut message = json!({
            "name": self.type_name,
            "summary": variant_description(self.variant),
            "contentType": "application/json",
            "headers": { "$ref": format!("#/components/schemas/{}Headers", self.kind) },
            "payload": { "$ref": format!("#/components/schemas/{schema_name}") },
            "bindings": { "kafka": key_binding(self.topic) },
            "examples": [{
                "name": self.type_name,
                "summary": format!("Key `{}`.", self.key),
                "headers": self.headers,
                "payload": self.example,
            }],
        });
        if self.correlated {
            message["correlationId"] = json!({ "$ref": "#/components/correlationIds/request" });
        }
        message
    }
}

/// The envelope narrowed to one type: the shared envelope and the variant's
/// `type` constant and `payload` schema.
fn typed_envelope(envelope: &str, variant: Option<&Value>) -> Value {
    let mut narrowed = variant.cloned().unwrap_or_else(|| json!({}));
    let description = narrowed
        .as_object_mut()
        .and_then(|v| v.remove("description"))
        .unwrap_or(Value::Null);
    let mut schema = json!({
        "allOf": [
            { "$ref": format!("#/components/schemas/{envelope}") },
            narrowed,
        ],
    });
    if !description.is_null() {
        schema["description"] = description;
    }
    schema
}

fn variant_description(variant: Option<&Value>) -> Value {
    variant
        .and_then(|v| v.get("description"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The Kafka message binding stating the record key of `topic`.
fn key_binding(topic: Topic) -> Value {
    json!({
        "key": {
            "type": "string",
            "pattern": "^[1-9][0-9]*$",
            "description": format!(
                "The payload's `{}` as decimal text (the {}).",
                topic.key_field(),
                key_noun(topic),
            ),
            "examples": [example_key(topic)],
        },
        "bindingVersion": KAFKA_BINDING_VERSION,
    })
}

fn key_noun(topic: Topic) -> &'static str {
    match topic.key_field() {
        "seat_id" => "seat",
        "product_id" => "product",
        _ => "user",
    }
}

fn example_key(topic: Topic) -> String {
    match topic.key_field() {
        "seat_id" => SEAT.to_string(),
        "product_id" => PRODUCT.to_string(),
        _ => USER.to_string(),
    }
}

fn event_headers() -> Value {
    json!({
        "type": "object",
        "description": "Headers of an event record.",
        "properties": {
            HEADER_EVENT_ID: {
                "type": "string",
                "format": "uuid",
                "description": "The envelope's `event_id`: deduplicate by it without parsing \
                    the value.",
            },
            HEADER_REQUEST_ID: {
                "type": "string",
                "format": "uuid",
                "description": "The request that caused the event (the envelope's \
                    `request_id`). On every event except `product.daily_stats`, which sums \
                    many orders.",
            },
            HEADER_TRACEPARENT: traceparent_schema(),
        },
        "required": [HEADER_EVENT_ID],
    })
}

fn request_headers() -> Value {
    json!({
        "type": "object",
        "description": "Headers of a request record. The gateway and the hold-expiry \
            scheduler set `request-id` and `traceparent` on every record; only a dead letter \
            re-driven with `workers dlq replay --force` whose payload has no readable request \
            id goes without them.",
        "properties": {
            HEADER_REQUEST_ID: {
                "type": "string",
                "format": "uuid",
                "description": "The envelope's `request_id`.",
            },
            HEADER_TRACEPARENT: traceparent_schema(),
            HEADER_DLQ_REPLAYED_FROM: {
                "type": "string",
                "pattern": "^.+/[0-9]+/[0-9]+$",
                "description": "On a record re-driven from its dead-letter topic: the dead \
                    letter's `topic/partition/offset`.",
            },
        },
    })
}

fn traceparent_schema() -> Value {
    json!({
        "type": "string",
        "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-01$",
        "description": "W3C trace context; its trace id is the request id without dashes, so \
            a request can be followed across gateway, broker and workers.",
    })
}

fn dead_letter_headers() -> Value {
    json!({
        "type": "object",
        "description": "Headers of a dead letter (the original record's headers are not copied).",
        "properties": {
            HEADER_DLQ_REASON: {
                "type": "string",
                "description": "Why the record was set aside, e.g. `amount must be positive` \
                    or `undecodable request: ...`.",
            },
            HEADER_DLQ_ORIGIN: {
                "type": "string",
                "pattern": "^.+/[0-9]+/[0-9]+$",
                "description": "Where the record was: `topic/partition/offset` (the topic's \
                    full name, prefix included).",
            },
        },
        "required": [HEADER_DLQ_REASON, HEADER_DLQ_ORIGIN],
    })
}

fn dead_letter_payload() -> Value {
    json!({
        "description": "The original record's value, byte for byte: usually a request (or \
            `order.paid`) envelope that failed validation, but anything that did not decode \
            at all too.",
    })
}

fn dead_letter_message() -> Value {
    let poison = json!({
        "request_id": REQUEST_CHARGE.to_string(),
        "version": REQUEST_VERSION,
        "timestamp": at(0).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "type": "balance.charge",
        "payload": { "user_id": USER, "amount": -5 },
    });
    json!({
        "name": DEAD_LETTER_MESSAGE,
        "title": "Dead letter",
        "summary": "A record its lane could not apply, set aside with the reason.",
        "contentType": "application/octet-stream",
        "headers": { "$ref": "#/components/schemas/DeadLetterHeaders" },
        "payload": { "$ref": "#/components/schemas/DeadLetter" },
        "bindings": { "kafka": {
            "key": {
                "type": "string",
                "description": "The original record's key, unchanged (empty when it had none).",
            },
            "bindingVersion": KAFKA_BINDING_VERSION,
        } },
        "examples": [{
            "name": "refused-charge",
            "summary": "A charge of a negative amount produced straight onto `charge-requests`.",
            "headers": {
                HEADER_DLQ_REASON: "amount must be positive",
                HEADER_DLQ_ORIGIN: "charge-requests/1/4711",
            },
            "payload": poison,
        }],
    })
}

/// What the document says about a topic.
struct About {
    title: &'static str,
    summary: &'static str,
    description: &'static str,
    /// Who writes it (the `send` operation).
    sent_by: &'static str,
    /// Who reads it.
    reader: Reader,
}

/// Who reads a topic.
enum Reader {
    /// The request lane of this name (consumer group `booking-{name}`): it
    /// applies each request once, dead-letters what it cannot.
    RequestLane(&'static str),
    /// Downstream consumers and the event lane of this name, which folds
    /// the events as `receives` says and dead-letters what it cannot.
    EventLane {
        name: &'static str,
        receives: &'static str,
    },
    /// Downstream consumers only.
    Downstream,
}

impl Reader {
    /// For the channel: who reads it.
    fn read_by(&self) -> String {
        match self {
            Reader::RequestLane(lane) => {
                format!("the {lane} lane, which applies each request once and records its outcome.")
            }
            Reader::EventLane { name, .. } => {
                format!(
                    "downstream consumers, and the {name} lane (consumer group `booking-{name}`)."
                )
            }
            Reader::Downstream => "downstream consumers (no lane of the system).".into(),
        }
    }

    /// The system's lane that reads it, if one does, and how (the
    /// `receive` operation).
    fn lane(&self) -> Option<(&'static str, String)> {
        match self {
            Reader::RequestLane(lane) => Some((
                lane,
                format!(
                    "The {lane} lane (consumer group `booking-{lane}`) applies the records of \
                     each partition in order, one transaction per batch with the outcomes, the \
                     events and the next offset (kept in Postgres)."
                ),
            )),
            Reader::EventLane { name, receives } => Some((name, (*receives).to_owned())),
            Reader::Downstream => None,
        }
    }
}

fn about(topic: Topic) -> About {
    const OUTBOX: &str = "the outbox relay: lanes write events to the `outbox` table in the \
        transaction that makes the change, and one relay at a time publishes them in commit \
        order with the idempotent producer (acks=all).";
    match topic {
        Topic::ReservationRequests => About {
            title: "Reservation requests",
            summary: "Hold, cancel and expire requests, one seat at a time.",
            description: "Requests to hold a seat, cancel a reservation (a paid one is \
                refunded) and release an unpaid hold whose time ran out.",
            sent_by: "the gateway (`reservation.hold` for `POST /v1/reservations`, \
                `reservation.cancel` for `POST /v1/reservations/{id}/cancel`) once the broker \
                acknowledged the record, before it answers `202`; the hold-expiry scheduler \
                (`reservation.expire`); `workers dlq replay` when an operator re-drives a dead \
                letter.",
            reader: Reader::RequestLane("reservation"),
        },
        Topic::PaymentRequests => About {
            title: "Payment requests",
            summary: "Pay a held reservation from the balance.",
            description: "Requests to pay a held reservation from the user's balance.",
            sent_by: "the gateway (`payment.pay` for `POST /v1/payments`) once the broker \
                acknowledged the record, before it answers `202`; `workers dlq replay`.",
            reader: Reader::RequestLane("payment"),
        },
        Topic::ChargeRequests => About {
            title: "Charge requests",
            summary: "Add money to a balance.",
            description: "Requests to charge a user's balance.",
            sent_by: "the gateway (`balance.charge` for `POST /v1/users/{id}/balance/charge`) \
                once the broker acknowledged the record, before it answers `202`; \
                `workers dlq replay`.",
            reader: Reader::RequestLane("charge"),
        },
        Topic::OrderRequests => About {
            title: "Order requests",
            summary: "Shop orders paid from the balance.",
            description: "Requests to order items (or check out the cart), paid from the \
                balance: every line is served or none.",
            sent_by: "the gateway (`order.place` for `POST /v1/orders` and `POST \
                /v1/users/{id}/cart/checkout`) once the broker acknowledged the record, before \
                it answers `202`; `workers dlq replay`.",
            reader: Reader::RequestLane("order"),
        },
        Topic::ReservationEvents => About {
            title: "Reservation events",
            summary: "A reservation's life: held, then confirmed, cancelled or expired.",
            description: "One event per change of a reservation. Each seat's events follow \
                `reservation.held` → `reservation.confirmed` / `reservation.cancelled` / \
                `reservation.expired` (a confirmed one may be cancelled later, with a refund \
                on `payment-events` and `balance-events`).",
            sent_by: OUTBOX,
            reader: Reader::Downstream,
        },
        Topic::PaymentEvents => About {
            title: "Payment events",
            summary: "Payments that succeeded, and their refunds.",
            description: "One event per payment and per refund (a paid reservation \
                cancelled).",
            sent_by: OUTBOX,
            reader: Reader::Downstream,
        },
        Topic::BalanceEvents => About {
            title: "Balance events",
            summary: "Every change of a balance, with the balance after it.",
            description: "One event per balance history row: `CHARGE`, `USE` (a payment or \
                an order) or `REFUND`. Each user's events chain: `balance_after` is the one \
                before plus or minus `amount`.",
            sent_by: OUTBOX,
            reader: Reader::Downstream,
        },
        Topic::OrderEvents => About {
            title: "Order events",
            summary: "Paid shop orders: the feed of the data platform and of the stats lane.",
            description: "One `order.paid` per order that succeeded, with its lines and \
                prices.",
            sent_by: OUTBOX,
            reader: Reader::EventLane {
                name: "stats",
                receives: "The stats lane (consumer group `booking-stats`) folds each batch of \
                 `order.paid` into per-product, per-day totals in the same transaction as its \
                 offsets; an order seen again (a repeat) counts once.",
            },
        },
        Topic::ProductDailyStats => About {
            title: "Product daily stats",
            summary: "A product's totals for one business day, after each change.",
            description: "The totals of a product for one business day (midnight in \
                `BUSINESS_TZ`, default Asia/Seoul) after the orders of a stats batch were \
                counted. Each record carries the totals, not a delta: the last record of a \
                (`product_id`, `date`) is its current total.",
            sent_by: OUTBOX,
            reader: Reader::Downstream,
        },
    }
}

/// `text` with its first letter upper-case.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// `reservation-events` → `ReservationEvents`, `order.paid` → `OrderPaid`,
/// `product.daily_stats` → `ProductDailyStats`.
fn pascal(name: &str) -> String {
    name.split(['-', '.', '_']).map(sentence).collect()
}

// --- examples -----------------------------------------------------------------
// One story: user 7 charges, holds seat 1042, pays, cancels; buys two shirts.

const USER: i64 = 7;
const SEAT: i64 = 1042;
const SCHEDULE: i64 = 12;
const RESERVATION: i64 = 501;
const PAYMENT: i64 = 88;
const PRODUCT: i64 = 4;
const STOCK: i64 = 11;
const ORDER: i64 = 310;
const PRICE: i64 = 50_000;
const SHIRT: i64 = 19_000;

const REQUEST_CHARGE: Uuid = Uuid::from_u128(0x0197_2a4e_1c00_7a01_8000_0000_0000_0001);
const REQUEST_HOLD: Uuid = Uuid::from_u128(0x0197_2a4e_1c00_7a01_8000_0000_0000_0002);
const REQUEST_PAY: Uuid = Uuid::from_u128(0x0197_2a4e_1c00_7a01_8000_0000_0000_0003);
const REQUEST_CANCEL: Uuid = Uuid::from_u128(0x0197_2a4e_1c00_7a01_8000_0000_0000_0004);
const REQUEST_EXPIRE: Uuid = Uuid::from_u128(0x0197_2a4e_1c00_7a01_8000_0000_0000_0005);
const REQUEST_ORDER: Uuid = Uuid::from_u128(0x0197_2a4e_1c00_7a01_8000_0000_0000_0006);
const QUEUE_TOKEN: Uuid = Uuid::from_u128(0x0197_2a4d_f000_7b02_9000_0000_0000_0042);

/// 2030-06-01T10:00:00Z plus `seconds`.
fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_906_538_400 + seconds, 0).unwrap_or_default()
}

fn event_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0197_2a4e_1d00_7c03_a000_0000_0000_0000 + n)
}

/// One request of every type.
fn request_examples() -> Vec<RequestEnvelope> {
    let envelope = |request_id, seconds, request| RequestEnvelope {
        request_id,
        version: REQUEST_VERSION,
        timestamp: at(seconds),
        request,
    };
    vec![
        envelope(
            REQUEST_HOLD,
            10,
            Request::HoldSeat(HoldSeat {
                seat_id: SEAT,
                user_id: USER,
                queue_token: QUEUE_TOKEN,
            }),
        ),
        envelope(
            REQUEST_CANCEL,
            40,
            Request::CancelReservation(CancelReservation {
                reservation_id: RESERVATION,
                seat_id: SEAT,
                user_id: USER,
            }),
        ),
        envelope(
            REQUEST_EXPIRE,
            310,
            Request::ExpireHold(ExpireHold {
                reservation_id: RESERVATION,
                seat_id: SEAT,
            }),
        ),
        envelope(
            REQUEST_PAY,
            20,
            Request::PayReservation(PayReservation {
                reservation_id: RESERVATION,
                user_id: USER,
                queue_token: QUEUE_TOKEN,
            }),
        ),
        envelope(
            REQUEST_CHARGE,
            0,
            Request::ChargeBalance(ChargeBalance {
                user_id: USER,
                amount: 100_000,
            }),
        ),
        envelope(
            REQUEST_ORDER,
            60,
            Request::PlaceOrder(PlaceOrder {
                user_id: USER,
                items: vec![OrderLine {
                    product_stock_id: STOCK,
                    quantity: 2,
                }],
                from_cart: false,
            }),
        ),
    ]
}

/// One event of every type.
fn event_examples() -> Vec<EventEnvelope> {
    let envelope = |n, request_id, seconds, event| EventEnvelope {
        event_id: event_id(n),
        version: EVENT_VERSION,
        timestamp: at(seconds),
        request_id,
        event,
    };
    let reservation = |status: &str, expires_at| ReservationChanged {
        reservation_id: RESERVATION,
        seat_id: SEAT,
        schedule_id: SCHEDULE,
        user_id: USER,
        status: status.to_owned(),
        amount: PRICE,
        expires_at,
    };
    let payment = |status: &str| PaymentChanged {
        payment_id: PAYMENT,
        reservation_id: RESERVATION,
        user_id: USER,
        amount: PRICE,
        status: status.to_owned(),
        paid_at: at(21),
    };
    vec![
        envelope(
            1,
            Some(REQUEST_HOLD),
            11,
            Event::ReservationHeld(reservation("PENDING", Some(at(311)))),
        ),
        envelope(
            2,
            Some(REQUEST_PAY),
            21,
            Event::ReservationConfirmed(reservation("CONFIRMED", None)),
        ),
        envelope(
            3,
            Some(REQUEST_CANCEL),
            41,
            Event::ReservationCancelled(reservation("CANCELLED", None)),
        ),
        envelope(
            4,
            Some(REQUEST_EXPIRE),
            311,
            Event::ReservationExpired(reservation("EXPIRED", None)),
        ),
        envelope(
            5,
            Some(REQUEST_PAY),
            21,
            Event::PaymentSucceeded(payment("SUCCESS")),
        ),
        envelope(
            6,
            Some(REQUEST_CANCEL),
            41,
            Event::PaymentRefunded(payment("REFUNDED")),
        ),
        envelope(
            7,
            Some(REQUEST_PAY),
            21,
            Event::BalanceChanged(BalanceChanged {
                user_id: USER,
                history_id: 3001,
                kind: BalanceChangeKind::Use,
                amount: PRICE,
                balance_after: 50_000,
                payment_id: Some(PAYMENT),
            }),
        ),
        envelope(
            8,
            Some(REQUEST_ORDER),
            61,
            Event::OrderPaid(OrderPaid {
                order_id: ORDER,
                user_id: USER,
                payment_id: PAYMENT + 1,
                items: vec![OrderPaidItem {
                    product_id: PRODUCT,
                    product_stock_id: STOCK,
                    size: "M".into(),
                    quantity: 2,
                    unit_price: SHIRT,
                }],
                total_amount: 2 * SHIRT,
                paid_at: at(61),
            }),
        ),
        envelope(
            9,
            None,
            62,
            Event::ProductDailyStats(ProductDailyStats {
                product_id: PRODUCT,
                date: NaiveDate::from_ymd_opt(2030, 6, 1).unwrap_or_default(),
                total_orders: 1,
                total_quantity: 2,
                total_sales_amount: 2 * SHIRT,
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn doc() -> Value {
        serde_json::to_value(document()).expect("document as JSON")
    }

    /// The `type` constants of an adjacently tagged enum's schema.
    fn wire_types(schema: schemars::Schema) -> BTreeSet<String> {
        schema
            .to_value()
            .get("oneOf")
            .and_then(Value::as_array)
            .expect("oneOf")
            .iter()
            .map(|v| {
                v.pointer("/properties/type/const")
                    .and_then(Value::as_str)
                    .expect("type const")
                    .to_owned()
            })
            .collect()
    }

    fn message_ids(doc: &Value, channel: &str) -> BTreeSet<String> {
        doc["channels"][channel]["messages"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_topic_has_a_channel_with_messages_and_operations() {
        let doc = doc();
        for topic in Topic::ALL {
            let name = topic.base_name();
            let channel = &doc["channels"][name];
            assert_eq!(channel["address"], name, "channel of {name}");
            assert!(
                !message_ids(&doc, name).is_empty(),
                "{name} documents no message"
            );
            let description = channel["description"].as_str().expect("description");
            assert!(description.contains(topic.key_field()), "{name}: key");
            assert!(description.contains("TOPIC_PREFIX"), "{name}: prefix");
            let send = &doc["operations"][format!("send{}", pascal(name))];
            assert_eq!(send["action"], "send", "{name}: send operation");
            if topic.is_request_topic() || topic == Topic::OrderEvents {
                let receive = &doc["operations"][format!("receive{}", pascal(name))];
                assert_eq!(receive["action"], "receive", "{name}: receive operation");
            }
            if topic.has_dlq() {
                let dlq = format!("{name}.dlq");
                assert_eq!(doc["channels"][&dlq]["address"], dlq.as_str());
                assert_eq!(
                    message_ids(&doc, &dlq),
                    BTreeSet::from([DEAD_LETTER_MESSAGE.to_owned()])
                );
            }
        }
    }

    #[test]
    fn every_event_and_request_type_has_a_message_on_its_topic() {
        let doc = doc();
        let events = wire_types(schemars::schema_for!(Event));
        let requests = wire_types(schemars::schema_for!(Request));
        let documented = |topics: &mut dyn Iterator<Item = Topic>| -> BTreeSet<String> {
            topics
                .flat_map(|t| message_ids(&doc, t.base_name()))
                .collect()
        };
        assert_eq!(
            documented(&mut Topic::ALL.into_iter().filter(|t| !t.is_request_topic())),
            events,
            "every Event variant needs an example in schemas::asyncapi::event_examples"
        );
        assert_eq!(
            documented(&mut Topic::ALL.into_iter().filter(|t| t.is_request_topic())),
            requests,
            "every Request variant needs an example in schemas::asyncapi::request_examples"
        );
        for (type_name, topic, _, _) in examples() {
            assert!(message_ids(&doc, topic.base_name()).contains(type_name));
        }
    }

    /// Every example record, request or event: its type, topic, key and
    /// wire form.
    fn examples() -> Vec<(&'static str, Topic, String, Value)> {
        let requests = request_examples().into_iter().map(|e| {
            let r = &e.request;
            (r.type_name(), r.topic(), r.key(), json!(e))
        });
        let events = event_examples().into_iter().map(|e| {
            let v = &e.event;
            (v.type_name(), v.topic(), v.key(), json!(e))
        });
        requests.chain(events).collect()
    }

    #[test]
    fn the_documented_key_is_the_key_the_services_use() {
        for (type_name, topic, key, wire) in examples() {
            let field = topic.key_field();
            assert_eq!(wire["payload"][field].to_string(), key, "{type_name}");
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = doc();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50);
        for r in found {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn operations_name_messages_of_their_own_channel() {
        let doc = doc();
        for (id, operation) in doc["operations"].as_object().expect("operations") {
            let channel = operation["channel"]["$ref"].as_str().expect("channel");
            for message in operation["messages"].as_array().expect("messages") {
                let r = message["$ref"].as_str().expect("message ref");
                assert!(r.starts_with(&format!("{channel}/messages/")), "{id}: {r}");
            }
        }
    }

    #[test]
    fn examples_carry_the_headers_the_producers_set() {
        let doc = doc();
        for example in event_examples() {
            let message = &doc["components"]["messages"][example.event.type_name()];
            let headers = &message["examples"][0]["headers"];
            assert_eq!(headers[HEADER_EVENT_ID], example.event_id.to_string());
            assert_eq!(
                headers[HEADER_REQUEST_ID].as_str(),
                example.request_id.map(|id| id.to_string()).as_deref()
            );
        }
    }

    #[test]
    fn pascal_case_of_names() {
        assert_eq!(pascal("reservation-events"), "ReservationEvents");
        assert_eq!(pascal("product.daily_stats"), "ProductDailyStats");
    }
}
