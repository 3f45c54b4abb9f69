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


SOAK_START = "<!-- soak section: written by bench/report.py from bench/soak.json -->"
SOAK_END = "<!-- end of the soak section -->"


def soak_section():
    """The soak's section of REPORT.md, from bench/soak.json (which
    `bench/soak.py report` writes)."""
    soak = json.loads((dest / "soak.json").read_text())
    memory = soak["memory"]
    lines = [
        SOAK_START,
        "## Soak",
        "",
        f"`./dev bench --soak`: the stack on its own Kafka node (started by the bench) under the `mixed` load",
        "(three in five requests a charge, one an order, one a seat held then cancelled) for",
        f"{soak['minutes']} whole minutes at {soak['rate']:.0f} requests/s, open loop: 70 % of what the same",
        "stack reached in a minute at full speed just before. Memory: resident set of Kafka,",
        "gateway and workers, Postgres' proportional set size over all its processes (and its",
        "largest backend's resident set), sampled every 5 s; after warm-up means two minutes in.",
        "",
        "| | first minute | last minute | change |",
        "|---|---|---|---|",
        f"| completed/s | {soak['first_minute_per_sec']:.0f} | {soak['last_minute_per_sec']:.0f} | "
        f"{(soak['last_minute_per_sec'] / soak['first_minute_per_sec'] - 1) * 100:+.1f} % |",
        f"| outcome p99 ms | {soak['first_minute_p99_ms']:.1f} | {soak['last_minute_p99_ms']:.1f} | "
        f"{(soak['last_minute_p99_ms'] / soak['first_minute_p99_ms'] - 1) * 100:+.1f} % |",
        "",
        "| process | after warm-up MiB | end MiB | max MiB | growth after warm-up |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {m['after_warm_up_mb']:.1f} | {m['end_mb']:.1f} | {m['max_mb']:.1f} | "
            f"{(m['growth_after_warm_up'] or 0) * 100:+.1f} % |"
            for name, m in memory.items()
        ),
        "",
        f"Correct: {'yes' if soak['correct'] else 'NO'}. Outcomes: "
        + ", ".join(f"{k}={v}" for k, v in soak["outcomes"].items())
        + ".",
        "",
        "![Throughput, p99 and memory over the soak](soak.png)",
        "",
        SOAK_END,
    ]
    return "\n".join(lines)


def replace_section(start, end, section):
    """Puts `section` (between its markers) into REPORT.md, in place of an
    earlier one or at the end."""
    report_path = dest / "REPORT.md"
    text = report_path.read_text() if report_path.exists() else "# Benchmark report\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    report_path.write_text(text)
    print(section)


if mode == "queue":
    # Only the queue was measured: replace its section of the last report.
    replace_section(QUEUE_START, QUEUE_END, queue_section())
    sys.exit(0)

if mode == "soak":
    # Only the soak ran: its figures join the last report.
    soak = json.loads((dest / "soak.json").read_text())
    report_json = dest / "report.json"
    whole = json.loads(report_json.read_text()) if report_json.exists() else {"scenarios": {}}
    whole.setdefault("scenarios", {})["soak"] = soak
    report_json.write_text(json.dumps(whole, indent=2) + "\n")
    replace_section(SOAK_START, SOAK_END, soak_section())
    sys.exit(0)


# One directory per round (`r1`, `r2`, ... with `--repeat`), or the
# files of a single run directly in OUT_DIR.
rounds = sorted(
    (d for d in out.glob("r*") if d.is_dir() and re.fullmatch(r"r\d+", d.name)),
    key=lambda d: int(d.name[1:]),
)
rounds = rounds or [out]


def baseline_tps(where, scenario):
    pg = where / f"pgbench-{scenario}.txt"
    if not pg.exists():
        return None
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", pg.read_text())
    return float(match.group(1)) if match else None


def load(where, name):
    path = where / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def cpu_per_1000(where, name, completed):
    """CPU seconds per 1,000 completed requests of each process of the
    stack over the run (`bench/cpu.py` snapshots before and after)."""
    path = where / f"{name}.cpu.json"
    if not path.exists() or not completed:
        return None
    used = json.loads(path.read_text())
    return {process: round(seconds * 1000 / completed, 3) for process, seconds in used.items()}


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def spread(values, fmt):
    """`median (min–max)` of several runs; the value alone of one."""
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def measure(name, baseline_name):
    """Every round's figures of run `name` against baseline `baseline_name`."""
    runs = []
    for index, where in enumerate(rounds, 1):
        run = load(where, name)
        if run is None:
            continue
        baseline = baseline_tps(where, baseline_name)
        runs.append({
            "round": index,
            "completed_per_sec": round(run["completed_per_sec"], 1),
            "accepted_per_sec": round(run["accepted_per_sec"], 1),
            "baseline_tps": round(baseline, 1) if baseline else None,
            "ratio": round(run["completed_per_sec"] / baseline, 2) if baseline else None,
            "accept_p50_ms": run["accept_ms"]["p50"],
            "accept_p99_ms": run["accept_ms"]["p99"],
            "outcome_p50_ms": run["outcome_ms"]["p50"],
            "outcome_p99_ms": run["outcome_ms"]["p99"],
            "drain_ms": round(run["drain_ms"], 1),
            "correct": run["correct"],
            "cpu_s_per_1000": cpu_per_1000(where, name, run["completed"]),
            "report": run,
        })
    return runs


def summary(runs):
    """The medians of `runs`, under the keys a single run's report has."""
    pick = lambda key: median([r[key] for r in runs])
    rounded = lambda v, n=1: round(v, n) if v is not None else None
    cpu = {}
    for r in runs:
        for process, seconds in (r["cpu_s_per_1000"] or {}).items():
            cpu.setdefault(process, []).append(seconds)
    return {
        "completed_per_sec": rounded(pick("completed_per_sec")),
        "baseline_tps": rounded(pick("baseline_tps")),
        "ratio": rounded(pick("ratio"), 2),
        "accept_p99_ms": rounded(pick("accept_p99_ms"), 3),
        "outcome_p99_ms": rounded(pick("outcome_p99_ms"), 3),
        "drain_ms": rounded(pick("drain_ms")),
        "correct": all(r["correct"] for r in runs),
        "cpu_s_per_1000": {p: round(median(v), 3) for p, v in cpu.items()} or None,
        "runs": [{k: v for k, v in r.items() if k != "report"} for r in runs],
    }


def row(name, runs):
    last = runs[-1]["report"]
    rate = f"{last['rate']:.0f}/s" if last["rate"] else "max"
    outcomes = ", ".join(f"{k}={v}" for k, v in last["outcomes"].items())
    values = lambda key: [r[key] for r in runs]
    return (
        f"| {name} | {last['follow']} | {rate} | {last['requests']} | "
        f"{spread(values('accepted_per_sec'), lambda v: f'{v:.0f}')} | "
        f"{spread(values('completed_per_sec'), lambda v: f'{v:.0f}')} | "
        f"{spread(values('baseline_tps'), lambda v: f'{v:.0f}')} | "
        f"{spread(values('ratio'), lambda v: f'{v:.2f}x')} | "
        f"{spread(values('accept_p50_ms'), lambda v: f'{v:.1f}')} / {spread(values('accept_p99_ms'), lambda v: f'{v:.1f}')} | "
        f"{spread(values('outcome_p50_ms'), lambda v: f'{v:.1f}')} / {spread(values('outcome_p99_ms'), lambda v: f'{v:.1f}')} | "
        f"{spread(values('drain_ms'), lambda v: f'{v:.0f}')} | "
        f"{'yes' if all(values('correct')) else 'NO'} | {outcomes} |"
    )


scenarios = {}
rows = []
cpu_rows = []
for name in ["charge", "booking", "rush", "shop"]:
    runs = measure(name, name)
    if not runs:
        continue
    rows.append(row(name, runs))
    scenarios[name] = summary(runs)

extra_rows = []
extras = {}
for name in ["charge-half-rate", "charge-closed-loop"]:
    runs = measure(name, "charge")
    if not runs:
        continue
    extra_rows.append(row(name, runs))
    extras[name] = summary(runs)
    extras[name]["rate"] = runs[-1]["report"]["rate"]

for name, figures in [*scenarios.items(), *extras.items()]:
    cpu = figures["cpu_s_per_1000"]
    if cpu:
        total = sum(cpu.values())
        cpu_rows.append(
            f"| {name} | "
            + " | ".join(f"{cpu.get(p, 0):.3f}" for p in ("gateway", "workers", "kafka", "postgres"))
            + f" | {total - cpu.get('load', 0):.3f} | {cpu.get('load', 0):.3f} |"
        )


def baseline_cpu(where, scenario, process="postgres"):
    """CPU seconds of `process` (Postgres, or `load`: pgbench itself) per
    1,000 transactions of a pgbench baseline."""
    pg, cpu = where / f"pgbench-{scenario}.txt", where / f"pgbench-{scenario}.cpu.json"
    if not (pg.exists() and cpu.exists()):
        return None
    match = re.search(r"number of transactions actually processed: (\d+)", pg.read_text())
    seconds = json.loads(cpu.read_text()).get(process)
    if not match or seconds is None or int(match.group(1)) == 0:
        return None
    return seconds * 1000 / int(match.group(1))


for name in scenarios:
    seconds = median([baseline_cpu(where, name) for where in rounds])
    if seconds is not None:
        scenarios[name]["baseline_postgres_cpu_s_per_1000"] = round(seconds, 3)
        client = median([baseline_cpu(where, name, "load") for where in rounds])
        cpu_rows.append(
            f"| baseline {name} (pgbench) | | | | {seconds:.3f} | {seconds:.3f} | "
            f"{client:.3f} |" if client is not None else f"| baseline {name} (pgbench) | | | | {seconds:.3f} | {seconds:.3f} | |"
        )

if (dest / "soak.json").exists():
    # The last soak run (`./dev bench --soak`) stays in the report.
    scenarios["soak"] = json.loads((dest / "soak.json").read_text())

broker = (out / "broker.txt").read_text().strip() if (out / "broker.txt").exists() else "unknown"
(dest / "report.json").write_text(
    json.dumps(
        {"mode": mode, "rounds": len(rounds), "broker": broker, "scenarios": {**scenarios, **extras}},
        indent=2,
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
    f"Mode: `{mode}`, {len(rounds)} round{'s' if len(rounds) > 1 else ''}. Generated by "
    f"`./dev bench{' --quick' if mode == 'quick' else ''}{f' --repeat {len(rounds)}' if len(rounds) > 1 else ''}`;",
    "every figure in the tables comes from that run on this machine (gateway, workers, broker,",
    "Postgres and load all colocated on 2 cores). The ratio is end-to-end completed/s divided by",
    "the same round's pgbench baseline TPS (the same business SQL, one transaction per request,",
    "same client count). With several rounds (each: every scenario, then the baselines), a cell",
    "is the median and, in brackets, the range over the rounds.",
    "",
    f"Broker: {broker}.",
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
    "## Charge: latency at half the maximum rate, the closed loop",
    "",
    "`charge-half-rate` is an open-loop run at half of the `charge` row's completed/s (latency counts",
    "from when each request was due); `charge-closed-loop` is the same workload with `--follow inline`;",
    "",
    header,
    rule,
    *extra_rows,
    "",
    "## CPU per request",
    "",
    "CPU seconds per 1,000 completed requests of each process of the stack over a run (user +",
    "system time from `/proc`, before and after; `postgres` is every Postgres process, its",
    "background workers included; `stack` their sum; `load` the client, loadgen or pgbench, on",
    "the same two cores; medians over the rounds). The baseline rows are per 1,000 pgbench",
    "transactions.",
    "",
    "| run | gateway | workers | kafka | postgres | stack | load (client) |",
    "|---|---|---|---|---|---|---|",
    *cpu_rows,
    "",
    *([queue_section(), ""] if (out / "queue.json").exists() else []),
    *([soak_section(), ""] if (dest / "soak.json").exists() else []),
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
