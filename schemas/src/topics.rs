//! Topic names, keys and partition counts (docs/design.md §3).

use serde::{Deserialize, Serialize};

/// A topic of the system. The Kafka name is [`Topic::base_name`], optionally
/// behind a deployment prefix (see [`TopicNames`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Topic {
    /// Hold, cancel and expire requests, keyed by seat id.
    ReservationRequests,
    /// Payment requests, keyed by user id.
    PaymentRequests,
    /// Balance charge requests, keyed by user id.
    ChargeRequests,
    /// Shop order requests, keyed by user id.
    OrderRequests,
    /// Reservation lifecycle events, keyed by seat id.
    ReservationEvents,
    /// Payment events, keyed by user id.
    PaymentEvents,
    /// Balance change events, keyed by user id.
    BalanceEvents,
    /// Paid order events, keyed by user id.
    OrderEvents,
    /// Updated per-product day totals, keyed by product id.
    ProductDailyStats,
}

impl Topic {
    /// Every topic, in a stable order.
    pub const ALL: [Topic; 9] = [
        Topic::ReservationRequests,
        Topic::PaymentRequests,
        Topic::ChargeRequests,
        Topic::OrderRequests,
        Topic::ReservationEvents,
        Topic::PaymentEvents,
        Topic::BalanceEvents,
        Topic::OrderEvents,
        Topic::ProductDailyStats,
    ];

    /// The topic's name without any deployment prefix.
    pub const fn base_name(self) -> &'static str {
        match self {
            Topic::ReservationRequests => "reservation-requests",
            Topic::PaymentRequests => "payment-requests",
            Topic::ChargeRequests => "charge-requests",
            Topic::OrderRequests => "order-requests",
            Topic::ReservationEvents => "reservation-events",
            Topic::PaymentEvents => "payment-events",
            Topic::BalanceEvents => "balance-events",
            Topic::OrderEvents => "order-events",
            Topic::ProductDailyStats => "product-daily-stats",
        }
    }

    /// Default partition count the topic is created with. Request topics
    /// get [`DEFAULT_REQUEST_PARTITIONS`] (a deployment may choose another
    /// count, see [`TopicNames::with_request_partitions`]).
    pub const fn partitions(self) -> i32 {
        match self {
            Topic::ReservationRequests
            | Topic::PaymentRequests
            | Topic::ChargeRequests
            | Topic::OrderRequests => DEFAULT_REQUEST_PARTITIONS,
            Topic::ReservationEvents
            | Topic::PaymentEvents
            | Topic::BalanceEvents
            | Topic::OrderEvents => 4,
            Topic::ProductDailyStats => 2,
        }
    }

    /// The payload field whose value, as decimal text, is the record key of
    /// every record on the topic: all records of one seat (reservation
    /// topics), one user (payment, charge, order, balance) or one product
    /// (daily stats) land on one partition, in order. Dead letters keep the
    /// key of the record they came from.
    pub const fn key_field(self) -> &'static str {
        match self {
            Topic::ReservationRequests | Topic::ReservationEvents => "seat_id",
            Topic::PaymentRequests
            | Topic::ChargeRequests
            | Topic::OrderRequests
            | Topic::PaymentEvents
            | Topic::BalanceEvents
            | Topic::OrderEvents => "user_id",
            Topic::ProductDailyStats => "product_id",
        }
    }

    /// Whether lanes consume this topic (and so it has a dead-letter topic).
    pub const fn is_request_topic(self) -> bool {
        matches!(
            self,
            Topic::ReservationRequests
                | Topic::PaymentRequests
                | Topic::ChargeRequests
                | Topic::OrderRequests
        )
    }

    /// Whether a lane consumes this topic and may dead-letter records from it.
    pub const fn has_dlq(self) -> bool {
        self.is_request_topic() || matches!(self, Topic::OrderEvents)
    }
}

/// Partitions of each request topic unless the deployment says otherwise.
/// Each partition is one lane task and one batch transaction at a time; two
/// keep both cores of a small machine busy, and every partition costs the
/// broker a read per consumer poll, so more only pay with more cores or
/// more worker processes.
pub const DEFAULT_REQUEST_PARTITIONS: i32 = 2;

/// Resolves topic names for one deployment. A prefix lets several stacks (or
/// parallel tests) share one broker without seeing each other's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
    request_partitions: i32,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self::new("")
    }
}

impl TopicNames {
    /// Names behind `prefix` (empty for the plain names of docs/design.md §3).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            request_partitions: DEFAULT_REQUEST_PARTITIONS,
        }
    }

    /// The same names, with request topics created with `partitions`
    /// partitions (at least one).
    pub fn with_request_partitions(mut self, partitions: i32) -> Self {
        self.request_partitions = partitions.max(1);
        self
    }

    /// The deployment prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Kafka name of `topic`.
    pub fn name(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.base_name())
    }

    /// The Kafka name of `topic`'s dead-letter topic.
    pub fn dlq(&self, topic: Topic) -> String {
        format!("{}{}.dlq", self.prefix, topic.base_name())
    }

    /// Every topic to create, with its partition count: the topics of
    /// [`Topic::ALL`] and the dead-letter topics of the consumed ones.
    pub fn all_with_partitions(&self) -> Vec<(String, i32)> {
        let mut all: Vec<(String, i32)> = Topic::ALL
            .iter()
            .map(|t| {
                let partitions = if t.is_request_topic() {
                    self.request_partitions
                } else {
                    t.partitions()
                };
                (self.name(*t), partitions)
            })
            .collect();
        all.extend(
            Topic::ALL
                .iter()
                .filter(|t| t.has_dlq())
                .map(|t| (self.dlq(*t), 1)),
        );
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_names_keep_the_contract_names() {
        let names = TopicNames::new("t1-");
        assert_eq!(names.name(Topic::PaymentRequests), "t1-payment-requests");
        assert_eq!(names.dlq(Topic::ChargeRequests), "t1-charge-requests.dlq");
        assert_eq!(
            TopicNames::default().name(Topic::ReservationEvents),
            "reservation-events"
        );
    }

    #[test]
    fn request_partitions_are_the_deployments_choice_and_at_least_one() {
        let count = |names: &TopicNames, topic: &str| {
            names
                .all_with_partitions()
                .into_iter()
                .find(|(name, _)| name == topic)
                .map(|(_, partitions)| partitions)
        };
        let default = TopicNames::default();
        assert_eq!(
            count(&default, "charge-requests"),
            Some(DEFAULT_REQUEST_PARTITIONS)
        );
        let five = TopicNames::default().with_request_partitions(5);
        for topic in [
            "reservation-requests",
            "payment-requests",
            "charge-requests",
            "order-requests",
        ] {
            assert_eq!(count(&five, topic), Some(5), "{topic}");
        }
        assert_eq!(count(&five, "order-events"), Some(4));
        assert_eq!(count(&five, "charge-requests.dlq"), Some(1));
        let zero = TopicNames::default().with_request_partitions(0);
        assert_eq!(count(&zero, "payment-requests"), Some(1));
    }

    #[test]
    fn every_consumed_topic_has_a_dlq() {
        let all = TopicNames::default().all_with_partitions();
        for topic in [
            "reservation-requests",
            "payment-requests",
            "charge-requests",
            "order-requests",
            "order-events",
        ] {
            assert!(
                all.iter().any(|(n, _)| *n == format!("{topic}.dlq")),
                "{topic}"
            );
        }
        assert_eq!(all.len(), 14);
    }
}
