//! Turning a Kafka record into a validated request, or a reason to
//! dead-letter it.

use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use rdkafka::message::{Message, OwnedMessage};
use schemas::{EventEnvelope, RequestEnvelope, Topic, TopicRequest};
use uuid::Uuid;

/// Who a request is, for its outcome row.
#[derive(Debug, Clone, Copy)]
pub struct RequestMeta<'a> {
    /// Request id.
    pub id: Uuid,
    /// Request type.
    pub type_name: &'a str,
    /// The user it acts for.
    pub user_id: Option<i64>,
}

/// Something a lane consumes.
pub trait LaneInput: Sized + Send + Sync + 'static {
    /// The topic it comes from.
    const TOPIC: Topic;

    /// Decodes and validates a record of [`LaneInput::TOPIC`].
    fn decode(message: &OwnedMessage) -> Result<Self, Poison>;

    /// The request whose outcome the engine records; None for events.
    fn request(&self) -> Option<RequestMeta<'_>>;

    /// The id events caused by this input carry as `request_id`.
    fn causation_id(&self) -> Option<Uuid>;

    /// When it was written (accepted, or when its event happened).
    fn timestamp(&self) -> DateTime<Utc>;
}

/// A request of topic `R`: a lane receives only its own topic's requests.
impl<R: TopicRequest> LaneInput for RequestEnvelope<R> {
    const TOPIC: Topic = R::TOPIC;

    fn decode(message: &OwnedMessage) -> Result<Self, Poison> {
        let envelope = decode(message, R::TOPIC)?;
        let request_id = Some(envelope.request_id);
        envelope.for_topic::<R>().map_err(|request| Poison {
            reason: format!(
                "{} does not belong on {}",
                request.type_name(),
                R::TOPIC.base_name()
            ),
            request_id,
        })
    }

    fn request(&self) -> Option<RequestMeta<'_>> {
        Some(RequestMeta {
            id: self.request_id,
            type_name: self.request.type_name(),
            user_id: self.request.user_id(),
        })
    }

    fn causation_id(&self) -> Option<Uuid> {
        Some(self.request_id)
    }

    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }
}

/// Names the event topic a lane consumes (see [`EventOn`]).
pub trait EventTopic: Send + Sync + 'static {
    /// The topic.
    const TOPIC: Topic;
}

/// An event of the topic `T` names: the input of a lane that consumes
/// events.
#[derive(Debug)]
pub struct EventOn<T> {
    /// The event.
    pub envelope: EventEnvelope,
    topic: PhantomData<fn() -> T>,
}

// Not derived: that would ask the topic's name `T` to be `Clone` too.
impl<T> Clone for EventOn<T> {
    fn clone(&self) -> Self {
        self.envelope.clone().into()
    }
}

impl<T> From<EventEnvelope> for EventOn<T> {
    fn from(envelope: EventEnvelope) -> Self {
        Self {
            envelope,
            topic: PhantomData,
        }
    }
}

impl<T: EventTopic> LaneInput for EventOn<T> {
    const TOPIC: Topic = T::TOPIC;

    fn decode(message: &OwnedMessage) -> Result<Self, Poison> {
        let envelope: EventEnvelope = serde_json::from_slice(message.payload().unwrap_or_default())
            .map_err(|error| Poison {
                reason: format!("undecodable event: {error}"),
                request_id: None,
            })?;
        if envelope.event.topic() != T::TOPIC {
            return Err(Poison {
                reason: format!("event does not belong on {}", T::TOPIC.base_name()),
                request_id: None,
            });
        }
        Ok(envelope.into())
    }

    fn request(&self) -> Option<RequestMeta<'_>> {
        None
    }

    fn causation_id(&self) -> Option<Uuid> {
        self.envelope.request_id
    }

    fn timestamp(&self) -> DateTime<Utc> {
        self.envelope.timestamp
    }
}

/// A record the lane cannot apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Poison {
    /// Why.
    pub reason: String,
    /// The request id, when the record carried a readable one.
    pub request_id: Option<Uuid>,
}

/// Decodes and validates `message` for a lane consuming `topic`.
pub(crate) fn decode(message: &OwnedMessage, topic: Topic) -> Result<RequestEnvelope, Poison> {
    let payload = message.payload().unwrap_or_default();
    match serde_json::from_slice::<RequestEnvelope>(payload) {
        Ok(envelope) => {
            let request_id = Some(envelope.request_id);
            if envelope.request.topic() != topic {
                return Err(Poison {
                    reason: format!(
                        "{} does not belong on {}",
                        envelope.request.type_name(),
                        topic.base_name()
                    ),
                    request_id,
                });
            }
            if envelope.version != schemas::requests::REQUEST_VERSION {
                return Err(Poison {
                    reason: format!("unsupported version {}", envelope.version),
                    request_id,
                });
            }
            envelope
                .request
                .validate()
                .map_err(|reason| Poison { reason, request_id })?;
            Ok(envelope)
        }
        Err(error) => Err(Poison {
            reason: format!("undecodable request: {error}"),
            request_id: lenient_request_id(payload),
        }),
    }
}

/// A stable 64-bit digest of a record's key and payload. The engine stores
/// the digest of the last record it applied; finding another record at that
/// offset later means the log was recreated under the stored offset.
pub(crate) fn record_digest(message: &OwnedMessage) -> i64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let key = message.key().unwrap_or_default();
    hasher.update((key.len() as u64).to_be_bytes());
    hasher.update(key);
    hasher.update(message.payload().unwrap_or_default());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(first)
}

/// The trace id of the record's W3C `traceparent` header
/// (`00-<trace id>-<parent span id>-<flags>`), when it has a valid one.
pub(crate) fn trace_id(message: &OwnedMessage) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    let value = headers
        .iter()
        .find(|h| h.key == schemas::HEADER_TRACEPARENT)?
        .value?;
    let mut parts = std::str::from_utf8(value).ok()?.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let valid = trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_ascii_lowercase())
}

/// The request id of a payload that may not decode as a request.
pub(crate) fn lenient_request_id(payload: &[u8]) -> Option<Uuid> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Uuid::parse_str(value.get("request_id")?.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn record(payload: &str) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.as_bytes().to_vec()),
            None,
            "charge-requests".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        )
    }

    #[test]
    fn garbage_is_poison_without_id() {
        let poison = decode(&record("not json"), Topic::ChargeRequests).expect_err("poison");
        assert!(poison.reason.starts_with("undecodable"));
        assert_eq!(poison.request_id, None);
    }

    #[test]
    fn invalid_payload_keeps_its_request_id() {
        let id = Uuid::now_v7();
        let raw = format!(
            r#"{{"request_id":"{id}","version":1,"timestamp":"2026-01-01T00:00:00Z","type":"balance.charge","payload":{{"user_id":1,"amount":-5}}}}"#
        );
        let poison = decode(&record(&raw), Topic::ChargeRequests).expect_err("poison");
        assert_eq!(poison.request_id, Some(id));
        assert!(poison.reason.contains("amount"));
    }

    #[test]
    fn digest_tells_records_apart_and_is_stable() {
        let a = record(r#"{"a":1}"#);
        assert_eq!(record_digest(&a), record_digest(&record(r#"{"a":1}"#)));
        assert_ne!(record_digest(&a), record_digest(&record(r#"{"a":2}"#)));
    }

    #[test]
    fn trace_id_comes_from_a_valid_traceparent() {
        use rdkafka::message::{Header, OwnedHeaders};
        let with = |value: &str| {
            let message = record("{}").replace_headers(Some(OwnedHeaders::new().insert(Header {
                key: schemas::HEADER_TRACEPARENT,
                value: Some(value),
            })));
            trace_id(&message)
        };
        let id = Uuid::from_u128(0xabc);
        assert_eq!(
            with(&schemas::traceparent_for(id)),
            Some(id.simple().to_string())
        );
        assert_eq!(with("00-zz-01"), None);
        assert_eq!(
            with(&format!("00-{}-0000000000000001-01", "0".repeat(32))),
            None
        );
        assert_eq!(trace_id(&record("{}")), None);
    }

    #[test]
    fn request_for_another_lane_is_poison() {
        let raw = format!(
            r#"{{"request_id":"{}","version":1,"timestamp":"2026-01-01T00:00:00Z","type":"balance.charge","payload":{{"user_id":1,"amount":5}}}}"#,
            Uuid::nil()
        );
        assert!(decode(&record(&raw), Topic::PaymentRequests).is_err());
        assert!(decode(&record(&raw), Topic::ChargeRequests).is_ok());
        // A lane's input type takes only its own topic's requests.
        type Payments = RequestEnvelope<schemas::requests::PaymentRequest>;
        type Charges = RequestEnvelope<schemas::requests::ChargeRequest>;
        let refused = Payments::decode(&record(&raw));
        assert_eq!(
            refused.map(|_| ()).map_err(|p| p.reason),
            Err("balance.charge does not belong on payment-requests".to_owned())
        );
        assert!(Charges::decode(&record(&raw)).is_ok());
    }
}
