//! The load: loadgen's four scenarios at once, open loop, each client
//! patient (it honours `Retry-After` and retries cut-off calls under its
//! own `Idempotency-Key`), plus poison records produced straight onto the
//! request topics.

use std::sync::Arc;
use std::time::Duration;

use loadgen::{Cli, Sample, Scenario};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::stack::Stack;
use crate::Settings;

/// A scenario's share of the load.
#[derive(Debug, Clone)]
pub struct Part {
    /// loadgen's scenario name.
    pub scenario: &'static str,
    /// Its arguments besides gateway, rate and duration.
    pub args: Vec<String>,
    /// Share of the total rate.
    pub share: f64,
    /// The codes its samples may end in: `SUCCEEDED` and the business
    /// refusals the scenario can meet. Any other (an HTTP status, a
    /// 503 past the client's patience, `INTERNAL`) fails the run.
    pub business_codes: &'static [&'static str],
}

/// The mix: charges; shop orders, every fifth through the cart; hold-then-
/// pay pairs, every fourth paid seat cancelled and refunded; and a rush on
/// one schedule (whose unpaid holds expire during the run).
pub fn mix(settings: &Settings) -> Vec<Part> {
    // One user and seat per hold-then-pay pair, seeded before the load.
    let booking_pairs =
        (settings.rate * BOOKING_SHARE * settings.expected_secs as f64).ceil() as u64;
    vec![
        Part {
            scenario: "charge",
            args: vec!["--users".into(), "100".into()],
            share: 0.42,
            business_codes: &["SUCCEEDED"],
        },
        Part {
            scenario: "shop",
            args: vec![
                "--users".into(),
                "100".into(),
                "--requests".into(),
                "100000".into(),
                "--cart-every".into(),
                "5".into(),
            ],
            share: 0.3,
            business_codes: &["SUCCEEDED", "OUT_OF_STOCK", "INSUFFICIENT_BALANCE"],
        },
        Part {
            scenario: "booking",
            args: vec![
                "--requests".into(),
                booking_pairs.max(50).to_string(),
                "--cancel-every".into(),
                "4".into(),
            ],
            share: BOOKING_SHARE,
            // A payment held up by a fault past the hold's end.
            business_codes: &["SUCCEEDED", "HOLD_EXPIRED"],
        },
        Part {
            scenario: "rush",
            args: vec![
                "--requests".into(),
                "300".into(),
                "--seats".into(),
                "50".into(),
            ],
            share: 0.2,
            business_codes: &["SUCCEEDED", "SEAT_TAKEN"],
        },
    ]
}

/// The booking pairs' share of the load (each seeds a user and a seat).
const BOOKING_SHARE: f64 = 0.08;

/// A poison record the run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Poison {
    /// Request topic it went to.
    pub topic: String,
    /// Marker in its payload.
    pub marker: Uuid,
    /// Its request id, when it carried a readable one.
    pub request_id: Option<Uuid>,
}

/// A scenario's samples, by scenario name.
type PartSamples = (String, Vec<Sample>);

/// The running load.
pub struct Load {
    stop: watch::Sender<bool>,
    parts: Vec<JoinHandle<anyhow::Result<PartSamples>>>,
    poison: JoinHandle<anyhow::Result<Vec<Poison>>>,
}

/// What the load saw.
pub struct LoadResult {
    /// Samples per scenario.
    pub samples: Vec<PartSamples>,
    /// Poison records produced.
    pub poison: Vec<Poison>,
}

/// Seeds every part (through the gateway, patiently) and returns them ready.
pub async fn seed(stack: &Stack, settings: &Settings) -> anyhow::Result<Vec<(Cli, Arc<Scenario>)>> {
    let mut seeded = Vec::new();
    for part in mix(settings) {
        let rate = (settings.rate * part.share).max(1.0);
        let mut args: Vec<String> = [
            "loadgen",
            "--scenario",
            part.scenario,
            "--gateway",
            &stack.gateway_url,
            "--admin-token",
            &stack.api.admin_token,
            "--database-url",
            &stack.common.database_url,
            "--rate",
            &format!("{rate:.1}"),
            // Stopped by the run; the duration is only a bound.
            "--duration-secs",
            "3600",
            "--concurrency",
            "32",
            "--patience-secs",
            &settings.patience_secs.to_string(),
            "--no-progress",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(part.args.iter().cloned());
        let cli = <Cli as clap::Parser>::try_parse_from(&args)?;
        let scenario = loadgen::seed(&cli, &stack.api).await?;
        seeded.push((cli, scenario));
    }
    Ok(seeded)
}

impl Load {
    /// Starts every part and the poison producer.
    pub fn start(stack: &Stack, seeded: Vec<(Cli, Arc<Scenario>)>) -> anyhow::Result<Self> {
        let (stop, watch) = watch::channel(false);
        let parts = seeded
            .into_iter()
            .map(|(cli, scenario)| {
                let (api, watch) = (stack.api.clone(), watch.clone());
                tokio::spawn(async move {
                    let name = format!("{:?}", cli.scenario).to_lowercase();
                    let samples = loadgen::drive_until(&cli, &api, scenario, watch).await?;
                    anyhow::Ok((name, samples))
                })
            })
            .collect();
        let poison = tokio::spawn(produce_poison(stack.common.clone(), watch));
        Ok(Self {
            stop,
            parts,
            poison,
        })
    }

    /// Stops sending; waits until every request sent has its outcome (or
    /// its client gave up).
    pub async fn finish(self) -> anyhow::Result<LoadResult> {
        let _ = self.stop.send(true);
        let mut samples = Vec::new();
        for part in self.parts {
            samples.push(part.await??);
        }
        let poison = self.poison.await??;
        Ok(LoadResult { samples, poison })
    }
}

/// Every few seconds, a poison record onto a request topic: undecodable
/// bytes, or a request that fails validation (with a request id, so it is
/// recorded FAILED too).
async fn produce_poison(
    common: platform::CommonConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<Poison>> {
    let producer = platform::kafka::producer(&common)?;
    let topics = common.topics();
    let targets = [
        schemas::Topic::ChargeRequests,
        schemas::Topic::ReservationRequests,
        schemas::Topic::OrderRequests,
        schemas::Topic::PaymentRequests,
    ];
    let mut produced = Vec::new();
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(7)) => {}
            _ = stop.changed() => return Ok(produced),
        }
        let topic = targets[n % targets.len()];
        let marker = Uuid::new_v4();
        let (payload, request_id) = if n.is_multiple_of(2) {
            (
                format!("{{not json, chaos poison {marker}").into_bytes(),
                None,
            )
        } else {
            let id = Uuid::now_v7();
            let payload = serde_json::json!({
                "request_id": id, "version": 1, "timestamp": chrono::Utc::now().to_rfc3339(),
                "type": "balance.charge", "payload": {"user_id": 1, "amount": -5},
                "chaos_poison": marker,
            });
            (serde_json::to_vec(&payload)?, Some(id))
        };
        let topic = if request_id.is_some() {
            topics.name(schemas::Topic::ChargeRequests)
        } else {
            topics.name(topic)
        };
        // The broker may be down right now: keep trying until it takes it.
        loop {
            let sent = testkit::topics::produce(
                &producer,
                &topic,
                None,
                &format!("poison-{n}"),
                &payload,
                &[],
            )
            .await;
            if sent.is_ok() {
                break;
            }
            if *stop.borrow() {
                return Ok(produced);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        produced.push(Poison {
            topic,
            marker,
            request_id,
        });
        n += 1;
    }
}
