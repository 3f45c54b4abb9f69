#!/usr/bin/env python3
"""Runs a command and writes the CPU time (user + system, seconds) each
process of the stack used while it ran, from /proc: Kafka, the gateway and
the workers of `./dev` (their pid files), Postgres: the postmaster with the
children it reaped (backends that ended) plus its live children, so
connections opened and closed during the run count too, and `load`: the
command itself (loadgen or pgbench, the client side). A command that
prints `load: start` and `load: end` on stderr is measured between the two
(loadgen: the load, not its seeding and checks).

Usage: cpu.py PIDS_DIR OUT_JSON COMMAND [ARGS...]   (exits with COMMAND's status)"""
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    """(comm, ppid, utime, stime, cutime, cstime) of `pid`, in ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # proc(5): after comm come state (3), ppid (4), ... utime (14) to cstime (17).
    return comm, int(fields[1]), *(int(f) for f in fields[11:15])


def processes():
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                table[int(entry.name)] = stat(entry.name)
            except (OSError, ValueError, IndexError):
                pass
    return table


def snapshot(pids_dir):
    table = processes()
    used = {}
    for name in ("kafka", "gateway", "workers"):
        try:
            pid = int((pids_dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if pid in table:
            _, _, utime, stime, _, _ = table[pid]
            used[name] = (utime + stime) / TICK
    postmasters = [
        pid
        for pid, (comm, ppid, *_) in table.items()
        if comm == "postgres" and table.get(ppid, ("",))[0] != "postgres"
    ]
    if postmasters:
        total = 0
        for postmaster in postmasters:
            _, _, utime, stime, cutime, cstime = table[postmaster]
            total += utime + stime + cutime + cstime
            total += sum(u + s for comm, ppid, u, s, _, _ in table.values() if ppid == postmaster)
        used["postgres"] = total / TICK
    return used


def client_seconds(pid):
    try:
        _, _, utime, stime, _, _ = stat(pid)
        return (utime + stime) / TICK
    except (OSError, ValueError, IndexError):
        return None


def main():
    pids_dir, out, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    # A command that prints `load: start` and `load: end` on stderr (loadgen)
    # is measured between them only, its seeding and checks left out; any
    # other as a whole.
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, bufsize=1)
    before, after = snapshot(pids_dir), None
    client_before, client_after = client_seconds(child.pid), None
    for line in child.stderr:
        sys.stderr.write(line)
        if line.startswith("load: start"):
            before, client_before = snapshot(pids_dir), client_seconds(child.pid)
        elif line.startswith("load: end"):
            after, client_after = snapshot(pids_dir), client_seconds(child.pid)
    status = child.wait()
    if after is None:
        after = snapshot(pids_dir)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_before, client_after = 0.0, usage.ru_utime + usage.ru_stime
    used = {name: round(after[name] - before[name], 3) for name in before if name in after}
    if client_before is not None and client_after is not None:
        used["load"] = round(client_after - client_before, 3)
    out.write_text(json.dumps(used, indent=2) + "\n")
    sys.exit(status)


if __name__ == "__main__":
    main()
