"""End-to-end replay throughput and peak RSS beside `polars.read_ndjson` alone on the same file.

    python bench/bench_replay.py [--events 1000000] [--seed 3] [--days 0.25] [--workdir /tmp/dg-bench]

Simulates the file once (cached in the work directory), then runs, each in a fresh child
process so peak RSS is its own: (a) `pl.read_ndjson` of the whole file, the straightforward
baseline, and (b) `distillguard replay` of it into a fresh SQLite database. Prints events/s
and peak RSS side by side. A script, not a test: the machine is small and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

READ = """
import sys, polars as pl
df = pl.read_ndjson(sys.argv[1])
print(df.height)
"""


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (MiB) and CPU seconds (user+sys) of this child alone, and its stdout.

    `os.wait4` gives the child's own usage: RUSAGE_CHILDREN's peak is the largest child so far
    (the simulation, when this run made the file).
    """
    started = time.perf_counter()
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env) as proc:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, args)
    return time.perf_counter() - started, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--days",
        type=float,
        default=None,
        help="event-time span (default: the simulator's, 2 days); 0.25 = production-like density",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dg-bench"))
    args = parser.parse_args()
    span = "" if args.days is None else f"-{args.days:g}d"
    data = args.workdir / f"sim-{args.seed}-{args.events}{span}"
    events = data / "events.jsonl.gz"
    if not events.is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "distillguard",
                "simulate",
                "--out",
                str(data),
                "--seed",
                str(args.seed),
                "--events",
                str(args.events),
                *([] if args.days is None else ["--days", str(args.days)]),
            ],
            check=True,
        )
    n = sum(1 for _ in __import__("gzip").open(events, "rb"))
    print(f"# {' '.join(sys.argv)}  ({n:,} events, {events.stat().st_size / 2**20:.0f} MiB gzip)")
    read_s, read_rss, _, _ = run_child([sys.executable, "-c", READ, str(events)])
    db = args.workdir / "bench.db"
    db.unlink(missing_ok=True)
    env = {
        **os.environ,
        "DISTILLGUARD_DATABASE_URL": f"sqlite:///{db}",
        "DISTILLGUARD_DATA_DIR": str(args.workdir / "state"),
    }
    report = args.workdir / "report.json"
    # CPU seconds are steadier than wall time on a shared machine: quote both
    replay_s, replay_rss, replay_cpu, _ = run_child(
        [
            sys.executable,
            "-m",
            "distillguard",
            "replay",
            str(events),
            "--accounts",
            str(data / "accounts.jsonl.gz"),
            "--report",
            str(report),
        ],
        env=env,
    )
    flagged = sum(1 for a in json.loads(report.read_text())["accounts"] if a["flagged"])
    print(f"{'job':<28}{'seconds':>10}{'events/s':>14}{'peak RSS MiB':>16}")
    print(f"{'polars.read_ndjson alone':<28}{read_s:>10.1f}{n / read_s:>14,.0f}{read_rss:>16,.0f}")
    print(f"{'distillguard replay':<28}{replay_s:>10.1f}{n / replay_s:>14,.0f}{replay_rss:>16,.0f}")
    print(f"replay flagged {flagged} accounts; replay is {read_s / replay_s:.1%} of read_ndjson's rate")
    load = os.getloadavg()[0]
    print(f"replay CPU {replay_cpu:.1f} s (user+sys, all threads); load average {load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
