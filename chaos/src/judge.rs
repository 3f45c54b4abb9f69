//! The verdict: every check of the run as a function of its report, so
//! each can be fed a broken case (the tests below break one field of a
//! passing report at a time and expect that check, and only it, to fail).

use crate::report::ChaosReport;

/// Everything that went wrong in `report`; empty when every guarantee held.
pub fn judge(report: &ChaosReport) -> Vec<String> {
    let mut problems = Vec::new();
    faults(report, &mut problems);
    outcomes(report, &mut problems);
    scenarios(report, &mut problems);
    if let Some(error) = &report.outbox.error {
        problems.push(format!("draining the outbox failed: {error}"));
    } else if report.outbox.left > 0 {
        problems.push(format!(
            "the outbox did not drain: {} events left after {} s",
            report.outbox.left, report.outbox.waited_s
        ));
    }
    for (name, holds) in &report.invariants {
        if !holds {
            problems.push(format!("invariant {name} broken"));
        }
    }
    events(report, &mut problems);
    poison(report, &mut problems);
    problems.extend(report.ambiguous.problems.iter().cloned());
    problems
}

/// Every fault injected (none skipped unless the operator left its kind
/// out, and then not attempted), none failing, each recovered; no process
/// exited by itself.
fn faults(report: &ChaosReport, problems: &mut Vec<String>) {
    for fault in &report.faults {
        let name = fault.kind.name();
        if let Some(reason) = &fault.skipped {
            problems.push(format!("{name} could not be injected: {reason}"));
        }
        if let Some(error) = &fault.error {
            problems.push(format!("{name} failed: {error}"));
        }
        if fault.skipped.is_none() && fault.error.is_none() && fault.recovered_ms.is_none() {
            problems.push(format!("no recovery after {name}"));
        }
        if report.excluded.contains(&fault.kind) {
            problems.push(format!("{name} was injected though left out"));
        }
    }
    for process in &report.exited {
        problems.push(format!("{process} exited by itself"));
    }
}

/// Every accepted request has a business outcome: none PENDING, none
/// without a row, none FAILED (the run's own poison never gets a 202, so
/// a FAILED accepted request is a dropped one).
fn outcomes(report: &ChaosReport, problems: &mut Vec<String>) {
    let o = &report.outcomes;
    if o.pending + o.missing > 0 {
        problems.push(format!(
            "{} accepted requests undecided after the drain ({} PENDING, {} without a row)",
            o.pending + o.missing,
            o.pending,
            o.missing
        ));
    }
    if o.failed > 0 {
        problems.push(format!(
            "{} accepted requests FAILED (given up by a lane), for example {:?}",
            o.failed, o.failed_examples
        ));
    }
    if o.accepted == 0 {
        problems.push("no request was accepted".into());
    }
}

/// Each scenario accepted and succeeded something, and its clients saw
/// only its business codes: a 403, a 422, a 500, `INTERNAL`, a 503 that
/// outlasted the client's patience, or no answer at all is a failure.
fn scenarios(report: &ChaosReport, problems: &mut Vec<String>) {
    for (name, scenario) in &report.scenarios {
        if scenario.accepted == 0 {
            problems.push(format!("scenario {name} had nothing accepted"));
        }
        if scenario.outcomes.get("SUCCEEDED").copied().unwrap_or(0) == 0 {
            problems.push(format!("scenario {name} succeeded nothing"));
        }
        for (code, n) in &scenario.outcomes {
            if !scenario.business_codes.iter().any(|c| c == code) {
                problems.push(format!(
                    "scenario {name}: {n} answers of {code}, not one of its business codes {:?}",
                    scenario.business_codes
                ));
            }
        }
    }
}

/// Every effect has its event, nothing conflicts, each key is in order,
/// and repeats stay within what the relay had unconfirmed.
fn events(report: &ChaosReport, problems: &mut Vec<String>) {
    let e = &report.events;
    if e.records == 0 {
        problems.push("no event was read from the event topics".into());
    }
    if e.conflicting_repeats + e.out_of_order + e.missing + e.undecodable > 0 {
        problems.push(format!(
            "events: {} conflicting repeats, {} out of order, {} effects without their event, {} undecodable",
            e.conflicting_repeats, e.out_of_order, e.missing, e.undecodable
        ));
        problems.extend(e.problems.iter().cloned());
    }
    if e.duplicates > e.duplicate_bound {
        problems.push(format!(
            "{} repeated events, more than the {} the relay had unconfirmed",
            e.duplicates, e.duplicate_bound
        ));
    }
}

/// Every poison record dead-lettered with a reason (and FAILED when it
/// carried a request id); nothing else dead-lettered or parked.
fn poison(report: &ChaosReport, problems: &mut Vec<String>) {
    let p = &report.poison;
    if p.sent == 0 {
        problems.push("no poison record was sent".into());
    }
    if p.dead_lettered != p.sent || p.failed_outcomes != p.with_request_id {
        problems.push(format!(
            "poison: {} sent, {} dead-lettered, {} of {} with a request id recorded FAILED",
            p.sent, p.dead_lettered, p.failed_outcomes, p.with_request_id
        ));
    }
    if p.foreign_dead_letters > 0 {
        problems.push(format!(
            "{} dead letters are not the run's poison: {:?}",
            p.foreign_dead_letters, p.foreign_examples
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::faults::{FaultKind, FaultRecord};
    use crate::report::{
        AmbiguousSummary, EventSummary, OutboxDrain, PoisonSummary, ScenarioSummary,
    };
    use verify::outcomes::OutcomeCount;

    /// A report of a run where everything held.
    fn passing() -> ChaosReport {
        let scenario = |codes: &[&str], outcomes: &[(&str, usize)]| ScenarioSummary {
            requests: 10,
            accepted: 10,
            outcomes: outcomes
                .iter()
                .map(|(code, n)| ((*code).to_owned(), *n))
                .collect(),
            business_codes: codes.iter().map(|c| (*c).to_owned()).collect(),
        };
        ChaosReport {
            ok: true,
            mode: "quick".into(),
            rate: 1.0,
            duration_s: 1.0,
            broker: String::new(),
            database: String::new(),
            business_tz: "Asia/Seoul".into(),
            topic_prefix: String::new(),
            excluded: Vec::new(),
            faults: vec![FaultRecord {
                kind: FaultKind::WorkerKill,
                at_ms: 1,
                duration_ms: 1,
                recovered_ms: Some(5),
                skipped: None,
                error: None,
                relay_in_flight: 0,
            }],
            exited: Vec::new(),
            refused_503: 0,
            outcomes: OutcomeCount {
                accepted: 20,
                succeeded: 15,
                rejected: 5,
                ..OutcomeCount::default()
            },
            outbox: OutboxDrain::default(),
            invariants: BTreeMap::from([("balances_equal_history".to_owned(), true)]),
            events: EventSummary {
                records: 100,
                duplicates: 3,
                duplicate_bound: 3,
                ..EventSummary::default()
            },
            poison: PoisonSummary {
                sent: 2,
                dead_lettered: 2,
                with_request_id: 1,
                failed_outcomes: 1,
                ..PoisonSummary::default()
            },
            ambiguous: AmbiguousSummary::default(),
            scenarios: BTreeMap::from([
                (
                    "charge".to_owned(),
                    scenario(&["SUCCEEDED"], &[("SUCCEEDED", 10)]),
                ),
                (
                    "rush".to_owned(),
                    scenario(
                        &["SUCCEEDED", "SEAT_TAKEN"],
                        &[("SUCCEEDED", 5), ("SEAT_TAKEN", 5)],
                    ),
                ),
            ]),
            problems: Vec::new(),
        }
    }

    /// `break_it` applied to a passing report makes the judge find exactly
    /// one problem, containing `expect`.
    fn fails(expect: &str, break_it: impl FnOnce(&mut ChaosReport)) {
        let mut report = passing();
        break_it(&mut report);
        let problems = judge(&report);
        assert!(
            problems.len() == 1 && problems[0].contains(expect),
            "expected one problem with {expect:?}, got {problems:?}"
        );
    }

    fn part<'a>(report: &'a mut ChaosReport, name: &str) -> &'a mut ScenarioSummary {
        report
            .scenarios
            .get_mut(name)
            .expect("a scenario of the passing report")
    }

    #[test]
    fn a_passing_run_has_no_problem() {
        assert_eq!(judge(&passing()), Vec::<String>::new());
    }

    #[test]
    fn a_fault_skipped_failed_unrecovered_or_run_though_left_out_fails() {
        fails("could not be injected", |r| {
            r.faults[0].skipped = Some("no rights".into());
            r.faults[0].recovered_ms = None;
        });
        fails("failed: boom", |r| {
            r.faults[0].error = Some("boom".into());
            r.faults[0].recovered_ms = None;
        });
        fails("no recovery after worker_kill", |r| {
            r.faults[0].recovered_ms = None
        });
        fails("injected though left out", |r| {
            r.excluded.push(FaultKind::WorkerKill)
        });
        fails("worker-2 exited by itself", |r| {
            r.exited.push("worker-2".into())
        });
    }

    #[test]
    fn an_accepted_request_failed_pending_or_lost_fails() {
        fails("FAILED", |r| {
            r.outcomes.succeeded -= 1;
            r.outcomes.failed = 1;
        });
        fails("1 PENDING", |r| {
            r.outcomes.succeeded -= 1;
            r.outcomes.pending = 1;
        });
        fails("1 without a row", |r| {
            r.outcomes.succeeded -= 1;
            r.outcomes.missing = 1;
        });
        fails("no request was accepted", |r| {
            r.outcomes = OutcomeCount::default()
        });
    }

    #[test]
    fn a_scenario_with_a_foreign_code_or_nothing_done_fails() {
        fails("3 answers of HTTP_403", |r| {
            part(r, "rush").outcomes.insert("HTTP_403".into(), 3);
        });
        fails("INTERNAL", |r| {
            part(r, "charge").outcomes.insert("INTERNAL".into(), 1);
        });
        fails("charge succeeded nothing", |r| {
            let s = part(r, "charge");
            s.outcomes = BTreeMap::from([("BALANCE_LIMIT_EXCEEDED".to_owned(), 10)]);
            s.business_codes.push("BALANCE_LIMIT_EXCEEDED".into());
        });
        fails("rush had nothing accepted", |r| {
            part(r, "rush").accepted = 0;
        });
    }

    #[test]
    fn an_outbox_that_does_not_drain_or_cannot_be_read_fails() {
        fails("did not drain: 7 events", |r| r.outbox.left = 7);
        fails("draining the outbox failed", |r| {
            r.outbox.error = Some("connection refused".into())
        });
    }

    #[test]
    fn a_broken_invariant_fails() {
        fails("invariant balances_equal_history broken", |r| {
            r.invariants.insert("balances_equal_history".into(), false);
        });
    }

    #[test]
    fn events_missing_out_of_order_conflicting_or_repeated_past_the_bound_fail() {
        fails("effects without their event", |r| r.events.missing = 1);
        fails("out of order", |r| r.events.out_of_order = 1);
        fails("conflicting", |r| r.events.conflicting_repeats = 1);
        fails("4 repeated events", |r| r.events.duplicates = 4);
        fails("no event was read", |r| r.events = EventSummary::default());
    }

    #[test]
    fn poison_not_dead_lettered_or_a_foreign_dead_letter_fails() {
        fails("2 sent, 1 dead-lettered", |r| r.poison.dead_lettered = 1);
        fails("0 of 1 with a request id recorded FAILED", |r| {
            r.poison.failed_outcomes = 0
        });
        fails("1 dead letters are not the run's poison", |r| {
            r.poison.foreign_dead_letters = 1
        });
        fails("no poison record was sent", |r| {
            r.poison = PoisonSummary::default()
        });
    }

    #[test]
    fn an_ambiguous_answer_not_resolved_to_one_effect_fails() {
        fails("key k1", |r| {
            r.ambiguous.problems.push("key k1: two request ids".into())
        });
    }
}
