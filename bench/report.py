#!/usr/bin/env python3
"""Assembles bench/REPORT.md and bench/report.json from the loadgen JSON
reports and the pgbench outputs of one `./dev bench` run. The hand-written
analysis lives in bench/NOTES.md and is appended unchanged.

Usage: report.py OUT_DIR MODE [DEST_DIR]   (DEST_DIR defaults to bench/)"""
import json
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
mode = sys.argv[2]
bench = Path(__file__).resolve().parent
dest = Path(sys.argv[3]) if len(sys.argv) > 3 else bench
commands = (out / "commands.txt").read_text().strip().splitlines()
QUEUE_START = "<!-- queue section: written by bench/report.py from bench/queue.json -->"
QUEUE_END = "<!-- end of the queue section -->"


def queue_section():
    """The waiting-queue section of REPORT.md, from out/queue.json (which
    is also copied to bench/queue.json); None when the run had no queue
    part."""
    path = out / "queue.json"
    if not path.exists():
        return None
    queue = json.loads(path.read_text())
    (dest / "queue.json").write_text(json.dumps(queue, indent=2) + "\n")
    settings = queue["settings"]
    lines = [
        QUEUE_START,
        "## Waiting queue",
        "",
        "`queue-bench` (`./dev bench --queue`, or part of a whole run) on a gateway and a database of",
        "its own with no workers running: each line is seeded straight into the database (users and",
        "WAITING places, one statement), then measured through the gateway's HTTP API; admission rounds",
        "run in-process on the same database. Position: one `GET /v1/queue/tokens/{token}` per place,",
        f"{settings['samples_per_part']} places per part of the line, {settings['lookup_clients']} clients",
        f"at once. Admission: {settings['rounds']} rounds one a second, each admitting",
        f"{settings['admit_per_round']} places (median and slowest). Joins: {settings['joins']} new users",
        f"join the back of the line, {settings['join_clients']} at once. Polling: the intervals served to",
        "places at 60 log-spaced positions (asked over HTTP once each), each taken for every place up to",
        "the next sample, summed over the whole line, at the pace the rounds gave the line (`admit/s`);",
        "clients that long-poll at the front cost less than counted.",
        "",
        "| waiting | position p50 / p99 ms (front, middle, back) | position p99 ms | admission round ms (max) | joins/s | poll requests/s | admit/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, run in sorted(queue["sizes"].items(), key=lambda kv: int(kv[0])):
        parts = ", ".join(
            f"{run['position_ms'][p]['p50']:.2f} / {run['position_ms'][p]['p99']:.2f}"
            for p in ("front", "middle", "back")
        )
        lines.append(
            f"| {int(size):,} | {parts} | {run['position_p99_ms']:.2f} | "
            f"{run['admission_round_ms']:.1f} ({run['admission_round_max_ms']:.1f}) | "
            f"{run['joins_per_sec']:.0f} | {run['poll_requests_per_sec']:.0f} | {run['admit_rate']:.1f} |"
        )
    lines += ["", QUEUE_END]
    return "\n".join(lines)


if mode == "queue":
    # Only the queue was measured: replace its section of the last report.
    section = queue_section()
    report_path = dest / "REPORT.md"
    text = report_path.read_text() if report_path.exists() else "# Benchmark report\n"
    if QUEUE_START in text and QUEUE_END in text:
        before, rest = text.split(QUEUE_START, 1)
        after = rest.split(QUEUE_END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    report_path.write_text(text)
    print(section)
    sys.exit(0)


def baseline_tps(scenario):
    pg = out / f"pgbench-{scenario}.txt"
    if not pg.exists():
        return None
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", pg.read_text())
    return float(match.group(1)) if match else None


def load(name):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def row(name, run, baseline):
    ratio = run["completed_per_sec"] / baseline if baseline else None
    rate = f"{run['rate']:.0f}/s" if run["rate"] else "max"
    return ratio, (
        f"| {name} | {run['follow']} | {rate} | {run['requests']} | {run['accepted_per_sec']:.0f} | "
        f"{run['completed_per_sec']:.0f} | {baseline and f'{baseline:.0f}' or 'n/a'} | "
        f"{ratio and f'{ratio:.2f}x' or 'n/a'} | "
        f"{run['accept_ms']['p50']:.1f} / {run['accept_ms']['p99']:.1f} | "
        f"{run['outcome_ms']['p50']:.1f} / {run['outcome_ms']['p99']:.1f} | {run['drain_ms']:.0f} | "
        f"{'yes' if run['correct'] else 'NO'} | {', '.join(f'{k}={v}' for k, v in run['outcomes'].items())} |"
    )


scenarios = {}
rows = []
for name in ["charge", "booking", "rush", "shop"]:
    run = load(name)
    if run is None:
        continue
    baseline = baseline_tps(name)
    ratio, line = row(name, run, baseline)
    rows.append(line)
    scenarios[name] = {
        "completed_per_sec": round(run["completed_per_sec"], 1),
        "baseline_tps": round(baseline, 1) if baseline else None,
        "ratio": round(ratio, 2) if ratio else None,
        "accept_p99_ms": run["accept_ms"]["p99"],
        "outcome_p99_ms": run["outcome_ms"]["p99"],
        "drain_ms": round(run["drain_ms"], 1),
        "correct": run["correct"],
    }

extra_rows = []
extras = {}
for name in ["charge-half-rate", "charge-closed-loop", "charge-sqlite-broker"]:
    run = load(name)
    if run is None:
        continue
    baseline = baseline_tps("charge")
    ratio, line = row(name, run, baseline)
    extra_rows.append(line)
    extras[name] = {
        "completed_per_sec": round(run["completed_per_sec"], 1),
        "rate": run["rate"],
        "ratio": round(ratio, 2) if ratio else None,
        "accept_p99_ms": run["accept_ms"]["p99"],
        "outcome_p99_ms": run["outcome_ms"]["p99"],
        "correct": run["correct"],
    }

broker = (out / "broker.txt").read_text().strip() if (out / "broker.txt").exists() else "unknown"
(dest / "report.json").write_text(
    json.dumps(
        {"mode": mode, "broker": broker, "scenarios": scenarios, "charge_variants": extras}, indent=2
    )
    + "\n"
)
header = (
    "| run | follow | rate | requests | accepted/s | completed/s | baseline TPS | ratio | "
    "accept p50 / p99 ms | outcome p50 / p99 ms | last accept → last outcome ms | correct | outcomes |"
)
rule = "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
notes = bench / "NOTES.md"
report = [
    "# Benchmark report",
    "",
    f"Mode: `{mode}`. Generated by `./dev bench{' --quick' if mode == 'quick' else ''}`; every figure in the",
    "tables comes from that one run on this machine (gateway, workers, broker, Postgres and load all",
    "colocated on 2 cores). The ratio is end-to-end completed/s divided by the same run's pgbench",
    "baseline TPS (the same business SQL, one transaction per request, same client count).",
    "",
    f"Broker: nisshi with storage `{broker}` (`BENCH_BROKER_STORAGE`). The dev stack's default engine,",
    "SQLite, compiles every statement anew and would be the bottleneck of every run; the",
    "`charge-sqlite-broker` row below repeats the charge run with it.",
    "",
    "`follow detached`: a client holds its slot for the POST and follows the outcome with a",
    "long-poll on the side, as a browser does after a 202 (clients = POSTs in flight).",
    "`follow inline`: closed loop, a client waits for the outcome before its next request, as a",
    "pgbench client waits for its transaction.",
    "",
    header,
    rule,
    *rows,
    "",
    "## Charge: latency at half the maximum rate, the closed loop, the durable broker",
    "",
    "`charge-half-rate` is an open-loop run at half of the `charge` row's completed/s (latency counts",
    "from when each request was due); `charge-closed-loop` is the same workload with `--follow inline`;",
    "`charge-sqlite-broker` is the `charge` run against nisshi's SQLite engine (the dev stack's broker).",
    "",
    header,
    rule,
    *extra_rows,
    "",
    *([queue_section(), ""] if (out / "queue.json").exists() else []),
    "## Command lines",
    "",
    "```",
    *commands,
    "```",
    "",
]
if notes.exists():
    report += [notes.read_text().rstrip(), ""]
(dest / "REPORT.md").write_text("\n".join(report))
print("\n".join(report))
