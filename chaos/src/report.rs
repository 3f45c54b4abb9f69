//! `chaos.json` and the table in `CHAOS.md`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::faults::{FaultKind, FaultRecord};
use crate::load::Poison;
use verify::outcomes::OutcomeCount;

/// What the event topics showed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventSummary {
    /// Records read over the event topics.
    pub records: usize,
    /// Repeats of an event id (at-least-once delivery).
    pub duplicates: usize,
    /// Most repeats the faults can explain: the events the relays had
    /// sent but not confirmed when each fault struck (their rounds in
    /// flight), plus those of every round that ended without its commit
    /// (`outbox_unconfirmed_events_total`), as the relays reported them.
    /// Two relays publishing side by side would repeat nearly every event
    /// after the fault.
    pub duplicate_bound: usize,
    /// Repeats with another payload (never allowed).
    pub conflicting_repeats: usize,
    /// Events out of causal order for their key.
    pub out_of_order: usize,
    /// Decided effects without their event.
    pub missing: usize,
    /// Records that are not event envelopes.
    pub undecodable: usize,
    /// The first few problems found.
    pub problems: Vec<String>,
}

/// Whether the outbox drained after the load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxDrain {
    /// Events left in it at the end of the wait.
    pub left: i64,
    /// How long the run waited, seconds.
    pub waited_s: u64,
    /// The error that stopped the wait, if one did.
    pub error: Option<String>,
}

/// The calls that met an ambiguous answer (a 503 or a cut connection)
/// before their 202, each resolved to its one request and effect.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AmbiguousSummary {
    /// Calls that met at least one ambiguous answer.
    pub calls: usize,
    /// Ambiguous answers they met in all.
    pub answers: usize,
    /// Of the calls, resolved to exactly one request id and its effect.
    pub resolved: usize,
    /// What did not resolve.
    pub problems: Vec<String>,
}

/// What became of the poison records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoisonSummary {
    /// Produced onto request topics.
    pub sent: usize,
    /// Found in their topic's dead-letter topic with a `dlq-reason`.
    pub dead_lettered: usize,
    /// Of those with a request id, recorded FAILED with `INVALID_REQUEST`.
    pub failed_outcomes: usize,
    /// Produced with a request id.
    pub with_request_id: usize,
    /// Dead letters (on the dead-letter topics or parked) that are not the
    /// run's poison: requests the clients sent, dropped.
    pub foreign_dead_letters: usize,
    /// The first few of those.
    pub foreign_examples: Vec<String>,
    /// The records themselves.
    pub records: Vec<Poison>,
}

/// A scenario's share of the load.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    /// Requests (pairs for booking) sent.
    pub requests: usize,
    /// Request ids accepted (202).
    pub accepted: usize,
    /// Outcomes by code, as clients saw them.
    pub outcomes: BTreeMap<String, usize>,
    /// The codes the scenario may end in (`SUCCEEDED` and its business
    /// refusals); anything else fails the run.
    pub business_codes: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// Every guarantee held and every fault recovered.
    pub ok: bool,
    /// `quick` or `full`.
    pub mode: String,
    /// Target load, requests per second over the four scenarios.
    pub rate: f64,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// The broker the run measured (its own).
    pub broker: String,
    /// The database the run used (its own, created by it).
    pub database: String,
    /// The stack's `BUSINESS_TZ`, which the checks use.
    pub business_tz: String,
    /// The stack's `TOPIC_PREFIX`, which the checks use.
    pub topic_prefix: String,
    /// Fault kinds the operator left out (`--without`).
    pub excluded: Vec<FaultKind>,
    /// The faults, in order.
    pub faults: Vec<FaultRecord>,
    /// Processes that exited by themselves (restarted by the run).
    pub exited: Vec<String>,
    /// 503 answers clients met (and retried after `Retry-After`).
    pub refused_503: u64,
    /// What became of the accepted requests (distinct ids answered 202).
    pub outcomes: OutcomeCount,
    /// Whether the outbox drained.
    pub outbox: OutboxDrain,
    /// docs/design.md §4.4 and exactly-once effects.
    pub invariants: BTreeMap<String, bool>,
    /// The event topics.
    pub events: EventSummary,
    /// Poison records.
    pub poison: PoisonSummary,
    /// Keyed calls that met ambiguous answers.
    pub ambiguous: AmbiguousSummary,
    /// Load per scenario.
    pub scenarios: BTreeMap<String, ScenarioSummary>,
    /// What went wrong, if anything.
    pub problems: Vec<String>,
}

impl ChaosReport {
    /// Writes `chaos.json` and `CHAOS.md` into `dir` (names prefixed by
    /// `stem`).
    pub fn write(&self, dir: &Path, json_name: &str, md_name: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(json_name),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join(md_name), self.markdown())?;
        Ok(())
    }

    /// The table for people.
    pub fn markdown(&self) -> String {
        let ms = |v: Option<u64>| v.map_or("never".to_owned(), |v| format!("{v}"));
        let mut out = format!(
            "# Chaos run ({mode})\n\n\
             Result: **{ok}**. Generated by `./dev chaos{flag}`; the machine-readable report is \
             `chaos.json` next to this file.\n\n\
             Broker: {broker}. Database: {database}. The stack ran with `BUSINESS_TZ` \
             {tz} and `TOPIC_PREFIX` `{prefix}`, and the checks read both from its \
             configuration. Load: {rate} requests/s over charge, shop (orders and cart \
             checkouts), booking (hold then pay, every fourth paid seat cancelled and \
             refunded) and a rush on one schedule (its unpaid holds expire), open loop, every \
             client honouring `Retry-After` and retrying under its own `Idempotency-Key`. \
             Run took {secs:.0} s.{excluded}\n\n\
             ## Faults\n\n\
             `recovered ms` runs from the end of the fault until outcomes flow steadily again: \
             a charge on every partition of `charge-requests` decided within a second, three \
             probe rounds in a row (the time is the end of the first of them). A worker killed \
             without leaving its group holds its partitions until its session \
             (`KAFKA_SESSION_TIMEOUT_MS`, 6 s) runs out.\n\n\
             | # | fault | at s | lasted ms | recovered ms | note |\n|---|---|---|---|---|---|\n",
            mode = self.mode,
            ok = if self.ok { "ok" } else { "FAILED" },
            flag = if self.mode == "quick" { " --quick" } else { "" },
            broker = self.broker,
            database = self.database,
            rate = self.rate,
            secs = self.duration_s,
            tz = self.business_tz,
            prefix = self.topic_prefix,
            excluded = if self.excluded.is_empty() {
                String::new()
            } else {
                format!(
                    " Left out by the operator (`--without`): {}.",
                    self.excluded
                        .iter()
                        .map(|k| k.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        );
        for (i, fault) in self.faults.iter().enumerate() {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {} | {} | {} |\n",
                i + 1,
                fault.kind.name(),
                fault.at_ms as f64 / 1000.0,
                fault.duration_ms,
                ms(fault.recovered_ms),
                fault
                    .skipped
                    .as_deref()
                    .or(fault.error.as_deref())
                    .unwrap_or(""),
            ));
        }
        let mut by_kind: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for fault in &self.faults {
            if let Some(ms) = fault.recovered_ms {
                by_kind.entry(fault.kind.name()).or_default().push(ms);
            }
        }
        out.push_str("\nRecovery per fault kind (ms, min / median / max):\n\n| fault | n | min | median | max |\n|---|---|---|---|---|\n");
        for (kind, mut values) in by_kind {
            values.sort_unstable();
            out.push_str(&format!(
                "| {kind} | {} | {} | {} | {} |\n",
                values.len(),
                values[0],
                values[values.len() / 2],
                values[values.len() - 1]
            ));
        }
        let o = &self.outcomes;
        out.push_str(&format!(
            "\n## Requests\n\n\
             Every accepted request must end SUCCEEDED or REJECTED (a business refusal); FAILED \
             means a lane gave up on it.\n\n\
             | accepted (202) | 503 answers retried | SUCCEEDED | REJECTED | FAILED | PENDING after drain | without a row |\n\
             |---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} | {} |\n\n\
             Outbox after the load: {} events left{}.\n\n\
             Each scenario must accept and succeed something, and its clients may see only its \
             business codes.\n\n\
             | scenario | sent | accepted ids | outcomes | business codes |\n|---|---|---|---|---|\n",
            o.accepted,
            self.refused_503,
            o.succeeded,
            o.rejected,
            o.failed,
            o.pending,
            o.missing,
            self.outbox.left,
            self.outbox
                .error
                .as_ref()
                .map_or(String::new(), |e| format!(" (the wait failed: {e})")),
        ));
        for (name, scenario) in &self.scenarios {
            let outcomes: Vec<String> = scenario
                .outcomes
                .iter()
                .map(|(code, n)| format!("{code}={n}"))
                .collect();
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {} |\n",
                scenario.requests,
                scenario.accepted,
                outcomes.join(", "),
                scenario.business_codes.join(", ")
            ));
        }
        out.push_str(
            "\n## Invariants\n\nThose marked *constraint* restate a table constraint: the \
             database refuses a row that breaks them, so they cannot fail. Each of the others is \
             broken on purpose in `verify/tests/invariants.rs` and caught.\n\n\
             | invariant | guarded by | holds |\n|---|---|---|\n",
        );
        for (name, ok) in &self.invariants {
            out.push_str(&format!(
                "| {name} | {} | {} |\n",
                if verify::invariants::constraint_backed(name) {
                    "constraint"
                } else {
                    "the lanes"
                },
                if *ok { "yes" } else { "**NO**" }
            ));
        }
        let e = &self.events;
        out.push_str(&format!(
            "\n## Events (read from the start with a fresh reader)\n\n\
             | records | repeats (bound) | conflicting repeats | out of order | missing |\n\
             |---|---|---|---|---|\n| {} | {} ({}) | {} | {} | {} |\n",
            e.records,
            e.duplicates,
            e.duplicate_bound,
            e.conflicting_repeats,
            e.out_of_order,
            e.missing
        ));
        let p = &self.poison;
        out.push_str(&format!(
            "\n## Poison\n\n{} poison records produced onto request topics; {} found in their \
             dead-letter topic with a reason; {} of the {} that carried a request id recorded \
             FAILED (`INVALID_REQUEST`); {} other dead letters (must be 0).\n",
            p.sent, p.dead_lettered, p.failed_outcomes, p.with_request_id, p.foreign_dead_letters
        ));
        let a = &self.ambiguous;
        out.push_str(&format!(
            "\n## Ambiguous answers\n\n{} keyed calls met {} ambiguous answers (a 503, or a \
             connection cut with no answer) before their 202; {} resolved to exactly one request \
             id and one effect.\n",
            a.calls, a.answers, a.resolved
        ));
        if !self.problems.is_empty() {
            out.push_str("\n## Problems\n\n");
            for problem in &self.problems {
                out.push_str(&format!("- {problem}\n"));
            }
        }
        out
    }
}
