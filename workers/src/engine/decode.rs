//! Turning a Kafka record into a validated request, or a reason to
//! dead-letter it.

use rdkafka::message::{Message, OwnedMessage};
use schemas::{RequestEnvelope, Topic};
use uuid::Uuid;

/// A record the lane cannot apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Poison {
    /// Why.
    pub reason: String,
    /// The request id, when the record carried a readable one.
    pub request_id: Option<Uuid>,
}

/// Decodes and validates `message` for a lane consuming `topic`.
pub fn decode(message: &OwnedMessage, topic: Topic) -> Result<RequestEnvelope, Poison> {
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

fn lenient_request_id(payload: &[u8]) -> Option<Uuid> {
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
    fn request_for_another_lane_is_poison() {
        let raw = format!(
            r#"{{"request_id":"{}","version":1,"timestamp":"2026-01-01T00:00:00Z","type":"balance.charge","payload":{{"user_id":1,"amount":5}}}}"#,
            Uuid::nil()
        );
        assert!(decode(&record(&raw), Topic::PaymentRequests).is_err());
        assert!(decode(&record(&raw), Topic::ChargeRequests).is_ok());
    }
}
