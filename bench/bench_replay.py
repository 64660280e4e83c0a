"""End-to-end replay throughput and peak RSS beside `polars.read_ndjson` alone on the same file.

    python bench/bench_replay.py [--events 1000000] [--seed 3] [--workdir /tmp/dg-bench]

Simulates the file once (cached in the work directory), then runs, each in a fresh child
process so peak RSS is its own: (a) `pl.read_ndjson` of the whole file, the straightforward
baseline, and (b) `distillguard replay` of it into a fresh SQLite database. Prints events/s
and peak RSS side by side. A script, not a test: the machine is small and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

READ = """
import sys, polars as pl
df = pl.read_ndjson(sys.argv[1])
print(df.height)
"""


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) of the child, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all children so far: run the larger job last
    return seconds, max(peak, before) / 1024.0, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dg-bench"))
    args = parser.parse_args()
    data = args.workdir / f"sim-{args.seed}-{args.events}"
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
            ],
            check=True,
        )
    n = sum(1 for _ in __import__("gzip").open(events, "rb"))
    print(f"# {' '.join(sys.argv)}  ({n:,} events, {events.stat().st_size / 2**20:.0f} MiB gzip)")
    read_s, read_rss, _ = run_child([sys.executable, "-c", READ, str(events)])
    db = args.workdir / "bench.db"
    db.unlink(missing_ok=True)
    env = {
        **os.environ,
        "DISTILLGUARD_DATABASE_URL": f"sqlite:///{db}",
        "DISTILLGUARD_DATA_DIR": str(args.workdir / "state"),
    }
    report = args.workdir / "report.json"
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
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
        check=True,
        env=env,
        capture_output=True,
    )
    replay_s = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    replay_rss = usage.ru_maxrss / 1024.0
    # CPU seconds are steadier than wall time on a shared machine: quote both
    replay_cpu = (usage.ru_utime - cpu_before.ru_utime) + (usage.ru_stime - cpu_before.ru_stime)
    flagged = sum(1 for a in json.loads(report.read_text())["accounts"] if a["flagged"])
    print(f"{'job':<28}{'seconds':>10}{'events/s':>14}{'peak RSS MiB':>16}")
    print(f"{'polars.read_ndjson alone':<28}{read_s:>10.1f}{n / read_s:>14,.0f}{read_rss:>16,.0f}")
    print(f"{'distillguard replay':<28}{replay_s:>10.1f}{n / replay_s:>14,.0f}{replay_rss:>16,.0f}")
    print(f"replay flagged {flagged} accounts; replay is {read_s / replay_s:.1%} of read_ndjson's rate")
    load = os.getloadavg()[0]
    print(f"replay CPU {replay_cpu:.1f} s (user+sys, all threads); load average {load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
