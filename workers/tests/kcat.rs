//! Downstream teams read the event topics with stock Kafka clients: Debian's
//! `kcat` (librdkafka 2.0) reads the events of every event topic, with
//! their headers, with the command docs/events.md shows, and each payload is an
//! event envelope of the contract.

use std::process::Command;
use std::time::Duration;

use schemas::events::EventEnvelope;
use schemas::Topic;
use serde_json::Value;
use testkit::stack::{Options, Stack};

/// Every record of `topic` as `kcat -C -J` prints it (one JSON object a
/// line), read from the start to the end of the log.
fn kcat(brokers: &str, topic: &str) -> anyhow::Result<Vec<Value>> {
    let output = Command::new("kcat")
        .args([
            "-C",
            "-b",
            brokers,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-J",
        ])
        .output()
        .map_err(|e| anyhow::anyhow!("kcat could not run ({e}); ./dev test installs it"))?;
    anyhow::ensure!(
        output.status.success(),
        "kcat failed on {topic}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| Ok(serde_json::from_str(line)?))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kcat_reads_every_event_topic() -> anyhow::Result<()> {
    let stack = Stack::start(Options::default()).await?;
    let api = &stack.api;
    // A charge, a hold and its payment, an order: an event on each topic
    // (the order's day totals on product-daily-stats).
    let fan = api.fan(1, 10_000, 50_000).await?;
    let reservation = api.held(&fan.user, &fan.token, fan.seats[0]).await?;
    let paid = api.pay(&fan.user, &fan.token, reservation).await?;
    api.succeeded(&fan.user, paid).await?;
    let (_, stocks) = api
        .create_product("Tee", "tops", 1_000, &[("M", 5)])
        .await?;
    let order = api.order(&fan.user, &[(stocks[0], 1)]).await?;
    api.succeeded(&fan.user, order).await?;

    let brokers = stack.env.common.kafka_brokers.clone();
    for topic in [
        Topic::ReservationEvents,
        Topic::PaymentEvents,
        Topic::BalanceEvents,
        Topic::OrderEvents,
        Topic::ProductDailyStats,
    ] {
        let name = stack.env.topic(topic);
        // The outbox relay publishes shortly after the outcome.
        let records = testkit::eventually(
            &format!("kcat to read an event of {name}"),
            Duration::from_secs(30),
            || {
                let (brokers, name) = (brokers.clone(), name.clone());
                async move {
                    let records =
                        tokio::task::spawn_blocking(move || kcat(&brokers, &name)).await??;
                    Ok((!records.is_empty()).then_some(records))
                }
            },
        )
        .await?;
        for record in records {
            let payload = record["payload"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{name}: no payload in {record}"))?;
            let envelope: EventEnvelope = serde_json::from_str(payload)
                .map_err(|e| anyhow::anyhow!("{name}: not an event envelope ({e}): {payload}"))?;
            // kcat -J prints headers as a flat [name, value, ...] list.
            let headers: Vec<&str> = record["headers"]
                .as_array()
                .map(|h| h.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let event_id = headers
                .chunks(2)
                .find(|pair| pair[0] == schemas::HEADER_EVENT_ID)
                .and_then(|pair| pair.get(1).copied());
            assert_eq!(
                event_id,
                Some(envelope.event_id.to_string().as_str()),
                "{name}: the event id header, as kcat shows it"
            );
            assert!(
                record["key"].as_str().is_some_and(|k| !k.is_empty()),
                "{name}: keyed"
            );
        }
    }
    stack.stop().await
}
