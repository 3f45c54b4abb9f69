//! Latency histograms and the run report (human summary and JSON).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Cli;

/// What one request (or one hold-then-pay pair) measured.
#[derive(Debug, Clone)]
pub struct Sample {
    /// POST → 202, when accepted.
    pub accept: Option<Duration>,
    /// POST → outcome visible, when an outcome was seen.
    pub outcome: Option<Duration>,
    /// When the 202 arrived, since the run started.
    pub accepted_at: Option<Duration>,
    /// When the outcome was seen, since the run started.
    pub decided_at: Option<Duration>,
    /// `SUCCEEDED`, a rejection code, or `HTTP_<status>` / `ERROR` when the
    /// request was not accepted.
    pub code: String,
    /// Request ids the gateway accepted (two for a hold-then-pay pair).
    pub ids: Vec<uuid::Uuid>,
    /// 503 answers retried on the way.
    pub refused_503: u32,
    /// The calls of this sample that met ambiguous answers (a 503, a cut
    /// connection) before their 202.
    pub ambiguous: Vec<verify::ambiguous::Call>,
}

/// The accepted calls of one sample, as they come.
#[derive(Debug, Default)]
pub struct Calls {
    ids: Vec<uuid::Uuid>,
    refused_503: u32,
    ambiguous: Vec<verify::ambiguous::Call>,
}

impl Calls {
    /// Records an accepted call.
    pub fn push(&mut self, submitted: &client::Submitted) {
        self.ids.push(submitted.request_id);
        self.refused_503 += submitted.retried_503;
        if !submitted.ambiguous.is_empty() {
            self.ambiguous.push(verify::ambiguous::Call {
                request_id: submitted.request_id,
                key: submitted.idempotency_key.clone(),
                answers: submitted.ambiguous.clone(),
            });
        }
    }
}

impl Sample {
    /// A request that failed before an outcome.
    pub fn failed(code: impl Into<String>) -> Self {
        Self {
            accept: None,
            outcome: None,
            accepted_at: None,
            decided_at: None,
            code: code.into(),
            ids: Vec::new(),
            refused_503: 0,
            ambiguous: Vec::new(),
        }
    }

    /// With the 503s it met.
    pub fn refused(mut self, refused_503: u32) -> Self {
        self.refused_503 = refused_503;
        self
    }

    /// With the ids it had accepted and the 503s it met.
    pub fn with(mut self, calls: Calls) -> Self {
        self.ids = calls.ids;
        self.refused_503 = calls.refused_503;
        self.ambiguous = calls.ambiguous;
        self
    }

    /// A decided request.
    pub fn decided(started: Instant, sent: Instant, accepted: Instant, code: String) -> Self {
        let now = Instant::now();
        Self {
            accept: Some(accepted - sent),
            outcome: Some(now - sent),
            accepted_at: Some(accepted - started),
            decided_at: Some(now - started),
            code,
            ids: Vec::new(),
            refused_503: 0,
            ambiguous: Vec::new(),
        }
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

fn percentiles(values: impl Iterator<Item = Duration>) -> Percentiles {
    let mut histogram =
        Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"));
    for value in values {
        let _ = histogram.record(value.as_micros().max(1) as u64);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        p50: ms(histogram.value_at_quantile(0.50)),
        p90: ms(histogram.value_at_quantile(0.90)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
    }
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Requests sent.
    pub requests: usize,
    /// Requests answered 202.
    pub accepted: usize,
    /// Requests with a final outcome.
    pub completed: usize,
    /// Accepted per second, over the time to the last accept.
    pub accepted_per_sec: f64,
    /// Outcomes per second, over the time to the last outcome.
    pub completed_per_sec: f64,
    /// POST → 202.
    pub accept_ms: Percentiles,
    /// POST → outcome visible.
    pub outcome_ms: Percentiles,
    /// From the last accept to the last outcome.
    pub drain_ms: f64,
    /// Outcome counts by code.
    pub outcomes: BTreeMap<String, usize>,
    /// 503 answers (honoured and retried) over the run.
    pub refused_503: u64,
    /// Correctness checks after the run.
    pub checks: BTreeMap<String, bool>,
    /// All checks passed.
    pub correct: bool,
    /// Target rate (0 = as fast as possible) and concurrency.
    pub rate: f64,
    /// Clients (most POSTs in flight).
    pub concurrency: usize,
    /// How clients followed their requests.
    pub follow: crate::Follow,
    /// Outcomes per second of the run, by when they were seen.
    pub timeline: Vec<Bucket>,
    /// The same per minute.
    pub minutes: Vec<Bucket>,
}

/// A stretch of a run: the outcomes seen in it.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Seconds since the run started.
    pub start: u64,
    /// Outcomes seen in it.
    pub completed: usize,
    /// Their latency (POST → outcome), 99th percentile, milliseconds.
    pub outcome_p99_ms: f64,
}

/// The outcomes of `samples` in stretches of `width` seconds.
fn buckets(samples: &[&Sample], width: u64) -> Vec<Bucket> {
    let mut stretches: BTreeMap<u64, Vec<Duration>> = BTreeMap::new();
    for sample in samples {
        if let (Some(at), Some(outcome)) = (sample.decided_at, sample.outcome) {
            stretches
                .entry(at.as_secs() / width * width)
                .or_default()
                .push(outcome);
        }
    }
    stretches
        .into_iter()
        .map(|(start, outcomes)| Bucket {
            start,
            completed: outcomes.len(),
            outcome_p99_ms: percentiles(outcomes.into_iter()).p99,
        })
        .collect()
}

impl Report {
    /// Aggregates `samples`.
    pub fn build(cli: &Cli, samples: &[Sample], checks: BTreeMap<String, bool>) -> Self {
        let accepted: Vec<&Sample> = samples.iter().filter(|s| s.accept.is_some()).collect();
        let completed: Vec<&Sample> = samples.iter().filter(|s| s.outcome.is_some()).collect();
        let last_accept = accepted
            .iter()
            .filter_map(|s| s.accepted_at)
            .max()
            .unwrap_or_default();
        let last_outcome = completed
            .iter()
            .filter_map(|s| s.decided_at)
            .max()
            .unwrap_or_default();
        let per_sec = |n: usize, over: Duration| {
            if over.is_zero() {
                0.0
            } else {
                n as f64 / over.as_secs_f64()
            }
        };
        let mut outcomes = BTreeMap::new();
        for sample in samples {
            *outcomes.entry(sample.code.clone()).or_default() += 1;
        }
        let correct = checks.values().all(|ok| *ok);
        Self {
            scenario: format!("{:?}", cli.scenario).to_lowercase(),
            requests: samples.len(),
            accepted: accepted.len(),
            completed: completed.len(),
            accepted_per_sec: per_sec(accepted.len(), last_accept),
            completed_per_sec: per_sec(completed.len(), last_outcome),
            accept_ms: percentiles(accepted.iter().filter_map(|s| s.accept)),
            outcome_ms: percentiles(completed.iter().filter_map(|s| s.outcome)),
            drain_ms: last_outcome.saturating_sub(last_accept).as_secs_f64() * 1000.0,
            outcomes,
            refused_503: samples.iter().map(|s| u64::from(s.refused_503)).sum(),
            checks,
            correct,
            rate: cli.rate,
            concurrency: cli.concurrency,
            follow: cli.follow,
            timeline: buckets(&completed, 1),
            minutes: buckets(&completed, 60),
        }
    }

    /// A summary for people.
    pub fn human(&self) -> String {
        let mut out = format!(
            "scenario {}: {} requests, {} accepted, {} completed\n\
             throughput: {:.0} accepted/s, {:.0} completed/s (rate {}, concurrency {}, follow {:?})\n\
             accept  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n\
             outcome latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n\
             last accept -> last outcome: {:.0} ms\n",
            self.scenario,
            self.requests,
            self.accepted,
            self.completed,
            self.accepted_per_sec,
            self.completed_per_sec,
            if self.rate > 0.0 {
                format!("{}/s", self.rate)
            } else {
                "max".into()
            },
            self.concurrency,
            self.follow,
            self.accept_ms.p50,
            self.accept_ms.p90,
            self.accept_ms.p99,
            self.accept_ms.max,
            self.outcome_ms.p50,
            self.outcome_ms.p90,
            self.outcome_ms.p99,
            self.outcome_ms.max,
            self.drain_ms,
        );
        if self.refused_503 > 0 {
            out.push_str(&format!("503 answers retried: {}\n", self.refused_503));
        }
        out.push_str("outcomes:");
        for (code, n) in &self.outcomes {
            out.push_str(&format!(" {code}={n}"));
        }
        out.push_str("\nchecks:");
        for (name, ok) in &self.checks {
            out.push_str(&format!(" {name}={}", if *ok { "ok" } else { "FAILED" }));
        }
        out.push_str(&format!("\ncorrect: {}", self.correct));
        out
    }
}
