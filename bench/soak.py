#!/usr/bin/env python3
"""The soak run's two halves.

  soak.py sample PIDS_DIR OUT_CSV COMMAND [ARGS...]
      Runs COMMAND (the soak's loadgen) and every 5 s records the memory of
      each process of the stack into OUT_CSV: resident memory of Kafka,
      gateway and workers, and Postgres' proportional set size (PSS: shared
      memory split among its processes) over all its processes, with its
      largest backend. Exits with COMMAND's status.

  soak.py report OUT_DIR DEST_DIR
      Reads OUT_DIR/soak.json (loadgen's report, with its per-second and
      per-minute timelines) and OUT_DIR/soak-memory.csv; writes
      DEST_DIR/soak.json (the figures the targets name) and DEST_DIR/soak.png
      (throughput, p99 and memory over time; needs matplotlib, which
      `./dev bench --soak` installs into .dev/bench-venv)."""
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

EVERY = 5.0
PROCESSES = ("kafka", "gateway", "workers")


def kib(path, field):
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory(pids_dir):
    """MiB per process of the stack, now."""
    row = {}
    for name in PROCESSES:
        try:
            pid = int((pids_dir / f"{name}.pid").read_text().strip())
            row[name] = kib(f"/proc/{pid}/status", "VmRSS") / 1024
        except (OSError, ValueError):
            row[name] = None
    pss, largest = 0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            process = kib(entry / "smaps_rollup", "Pss")
        except OSError:
            continue
        pss += process
        largest = max(largest, kib(entry / "status", "VmRSS"))
    row["postgres"] = pss / 1024
    row["postgres_largest_backend"] = largest / 1024
    return row


def sample(pids_dir, out_csv, command):
    started = time.monotonic()
    child = subprocess.Popen(command)
    fields = ["second", *PROCESSES, "postgres", "postgres_largest_backend"]
    with open(out_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        while child.poll() is None:
            row = memory(pids_dir)
            row["second"] = round(time.monotonic() - started, 1)
            writer.writerow(row)
            handle.flush()
            try:
                child.wait(timeout=EVERY)
            except subprocess.TimeoutExpired:
                pass
    return child.returncode


def report(out, dest):
    run = json.loads((out / "soak.json").read_text())
    # Whole minutes only: the stretch after the last request was sent holds
    # the drain alone.
    end = run["timeline"][-1]["start"] + 1
    minutes = [m for m in run["minutes"] if m["start"] + 60 <= end]
    first, last = minutes[0], minutes[-1]
    rows = list(csv.DictReader(open(out / "soak-memory.csv")))
    # After warm-up: two minutes in.
    warm = [r for r in rows if float(r["second"]) >= 120] or rows
    memory_figures = {}
    for name in [*PROCESSES, "postgres", "postgres_largest_backend"]:
        values = [float(r[name]) for r in rows if r[name] not in ("", "None")]
        warm_values = [float(r[name]) for r in warm if r[name] not in ("", "None")]
        if not values:
            continue
        memory_figures[name] = {
            "after_warm_up_mb": round(warm_values[0], 1),
            "end_mb": round(values[-1], 1),
            "max_mb": round(max(values), 1),
            "growth_after_warm_up": round(values[-1] / warm_values[0] - 1, 3) if warm_values[0] else None,
        }
    figures = {
        "minutes": len(minutes),
        "rate": run["rate"],
        "first_minute_per_sec": round(first["completed"] / 60, 1),
        "last_minute_per_sec": round(last["completed"] / 60, 1),
        "first_minute_p99_ms": first["outcome_p99_ms"],
        "last_minute_p99_ms": last["outcome_p99_ms"],
        "max_rss_mb": {name: f["max_mb"] for name, f in memory_figures.items()},
        "memory": memory_figures,
        "correct": run["correct"],
        "outcomes": run["outcomes"],
    }
    (dest / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak.py: matplotlib missing; no plot", file=sys.stderr)
        return
    seconds = run["timeline"]
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    xs = [s["start"] / 60 for s in seconds]
    top.plot(xs, [s["completed"] for s in seconds], linewidth=0.6, label="per second")
    top.plot([m["start"] / 60 + 0.5 for m in minutes], [m["completed"] / 60 for m in minutes], "o-", label="per minute")
    top.axhline(run["rate"], color="grey", linestyle=":", label=f"target {run['rate']:.0f}/s")
    top.set_ylabel("outcomes / s")
    top.legend(loc="lower right")
    middle.plot(xs, [s["outcome_p99_ms"] for s in seconds], linewidth=0.6, label="p99 per second")
    middle.plot([m["start"] / 60 + 0.5 for m in minutes], [m["outcome_p99_ms"] for m in minutes], "o-", label="p99 per minute")
    middle.set_ylabel("outcome p99 ms")
    middle.set_yscale("log")
    middle.legend(loc="upper right")
    mx = [float(r["second"]) / 60 for r in rows]
    for name in [*PROCESSES, "postgres", "postgres_largest_backend"]:
        ys = [float(r[name]) if r[name] not in ("", "None") else None for r in rows]
        bottom.plot(mx, ys, label=name)
    bottom.set_ylabel("memory MiB (RSS; Postgres PSS)")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper left", fontsize="small")
    fig.suptitle(f"Soak: mixed load at {run['rate']:.0f}/s, {len(minutes)} minutes")
    fig.tight_layout()
    fig.savefig(dest / "soak.png", dpi=100)


def main():
    if sys.argv[1] == "sample":
        sys.exit(sample(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]))
    if sys.argv[1] == "report":
        report(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
