"""Kafka throughput: raw kafka-python consume rate vs one `distillguard consume` worker, same topic.

    python bench/bench_kafka.py [--events 300000] [--days 1] [--profile] [--work DIR --topic TOPIC]

Against the real broker (DISTILLGUARD_KAFKA_BOOTSTRAP, default 127.0.0.1:9092): simulates N events,
pads each to about 1.3 KB with an unknown field (as gateways add their own), produces them to a
fresh 4-partition topic, then measures in child processes (a) a bare poll loop over the topic,
(b) `distillguard consume --stop-at-end` on SQLite and (c) `replay` of the same file through the
same pipeline (no Kafka: what detection and persistence alone allow), each from its first record
to its last, with its peak RSS. (b) over (c) is the consumer's own cost. `--profile` runs (b)
under cProfile and prints where the time went, by owner. `--work DIR --topic TOPIC` reuses the
file and topic of an earlier run (same broker), to compare commits back to back on equal input.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pstats
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PAD_FIELD = b',"gateway_trace":"'
PAD_ALPHABET = b"0123456789abcdefghijklmnopqrstuvwxyz" * 64


def simulate_padded(
    work: Path, events: int, pad_to: int, seed: int, days: float = 1.0
) -> tuple[Path, Path, int, float]:
    """Simulated events padded to about `pad_to` bytes each; returns (file, accounts, count, mean size)."""
    from simulator import simulate

    corpus = REPO.parent / "shared" / "data" / "prompts" / "prompts.jsonl.gz"
    summary = simulate(
        seed=seed,
        out_dir=work / "sim",
        accounts=max(1000, events // 100),
        days=days,
        target_events=events,
        corpus=corpus if corpus.is_file() else None,
    )
    out = work / "events-padded.jsonl"
    total = n = 0
    with gzip.open(summary.events_path, "rb") as src, out.open("wb") as dst:
        for line in src:
            line = line.rstrip(b"\n")
            short = pad_to - len(line) - len(PAD_FIELD) - 2
            if short > 0:
                start = n % 36
                line = line[:-1] + PAD_FIELD + PAD_ALPHABET[start : start + short] + b'"}'
            dst.write(line + b"\n")
            total += len(line)
            n += 1
    return out, summary.accounts_path, n, total / max(n, 1)


def produce(bootstrap: str, topic: str, path: Path) -> tuple[int, float]:
    from kafka import KafkaProducer

    from ingest.kafka_io import produce_files, producer_config, servers

    producer = KafkaProducer(bootstrap_servers=servers(bootstrap), **producer_config())
    started = time.perf_counter()
    try:
        n = produce_files([path], producer=producer, topic=topic)
    finally:
        producer.close()
    return n, time.perf_counter() - started


def replay_child(events: str, accounts: str) -> None:
    """Child (c): replay the file in-process; prints {records, seconds} from its first batch read, as JSON."""
    from core.settings import Settings
    from ingest import replay as replay_module

    started: list[float] = []
    batches = replay_module.FileSource.batches

    def timed(self: Any, **kwargs: Any) -> Any:
        # the clock starts at the first batch read, after the account events are loaded, as (a)
        # and (b) start at their first record
        if not started:
            started.append(time.perf_counter())
        return batches(self, **kwargs)

    replay_module.FileSource.batches = timed  # type: ignore[method-assign]
    result = replay_module.replay([Path(events)], settings=Settings(), accounts=Path(accounts))
    seconds = time.perf_counter() - started[0]
    print(json.dumps({"records": result.report["events"]["read"], "seconds": seconds}))


def raw_consume(bootstrap: str, topic: str, expect: int) -> None:
    """Child (a): poll and do nothing else; prints {records, seconds} as JSON."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=50_000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    n = 0
    first = None
    deadline = time.monotonic() + 600
    while n < expect and time.monotonic() < deadline:
        polled_at = time.perf_counter()
        got = consumer.poll(timeout_ms=500, max_records=50_000)
        if got and first is None:
            # from the poll that brought the first records, as the worker measures itself
            first = polled_at
        for records in got.values():
            n += len(records)
    seconds = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    print(json.dumps({"records": n, "seconds": seconds}))


# Runs a module as `python -m` would and, at exit, writes its peak RSS (VmHWM) to BENCH_HWM_FILE
# (optionally profiling it): getrusage of a child forked from this big parent would report the
# parent's RSS at fork time if that was larger.
CHILD = """
import atexit, cProfile, os, runpy, sys
prof = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None
def done():
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["BENCH_PROFILE"])
    hwm = next(x for x in open("/proc/self/status") if x.startswith("VmHWM"))
    open(os.environ["BENCH_HWM_FILE"], "w").write(hwm.split()[1])
atexit.register(done)
module, sys.argv = sys.argv[1], sys.argv[1:]
if prof is not None:
    prof.enable()
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_child(
    module: str,
    args: list[str],
    env: dict[str, str],
    log: Path,
    profile: Path | None = None,
    timeout_s: float = 1800.0,
) -> tuple[str, float, int, int, float]:
    """Run `python -m module args`; returns (stdout, wall seconds, exit status, peak RSS in MiB, CPU seconds)."""
    hwm = log.with_suffix(".hwm")
    env = {**env, "BENCH_HWM_FILE": str(hwm), **({"BENCH_PROFILE": str(profile)} if profile else {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("wb") as err:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, module, *args],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=err,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            # a worker that stopped making progress (seen: kafka-python stuck in a rejoin) fails the
            # run instead of hanging it
            raise SystemExit(f"{module} {' '.join(args[:2])} did not finish in {timeout_s:.0f} s; see {log}") from None
    peak_kib = int(hwm.read_text()) if hwm.is_file() else 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.stdout.decode(), time.perf_counter() - started, proc.returncode, peak_kib // 1024, cpu


def owners(profile: Path, top: int = 25) -> None:
    """Print cumulative time by owner (whose code it is) and the top functions."""
    stats = pstats.Stats(str(profile))
    rows = []
    for (file, line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((f"{file}:{line}({func})", tt, ct))
    names = {
        # the partition stage (decode, dedupe, partials) runs on a thread cProfile does not see:
        # the loop's wait for it stands for it
        "consumer._result (waiting for the partition stage)": r"ingest/consumer.py:\d+\(_result\)",
        "consumer._complete (ring stage, persist, publish)": r"ingest/consumer.py:\d+\(_complete\)",
        "  pipeline.process_batch (ring stage + persist)": r"ingest/pipeline.py:\d+\(process_batch\)",
        "    engine.run (ring stage)": r"detector/engine.py:\d+\(run\)",
        "    pipeline._persist (DB)": r"ingest/pipeline.py:\d+\(_persist\)",
        "  consumer._checkpoint (pickle + fsync)": r"ingest/consumer.py:\d+\(_checkpoint\)",
        "  consumer._commit": r"ingest/consumer.py:\d+\(_commit\)",
        "  publisher flush / dead-letter flush": r"(detector/publisher.py|ingest/kafka_io.py):\d+\(flush\)",
        "KafkaConsumer.poll": r"kafka/consumer/group.py:\d+\(poll\)",
        "consumer._finish (end of input)": r"ingest/consumer.py:\d+\(_finish\)",
    }
    print("\nprofile of the worker (cumulative seconds):")
    for label, pattern in names.items():
        ct = max((c for name, _t, c in rows if re.search(pattern, name)), default=0.0)
        print(f"  {label:<48} {ct:8.2f}")
    print(f"\ntop {top} functions by own time:")
    for name, tt, ct in sorted(rows, key=lambda r: -r[1])[:top]:
        print(f"  {tt:8.2f} {ct:8.2f}  {name[-110:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--pad-to", type=int, default=1300, help="bytes per event (about)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--days",
        type=float,
        default=1.0,
        help="event-time span of the simulated events: the engine's work per 15-minute tick is paid "
        "per tick, so a sparse span (the default) measures it and a short one (1/24: one hour) measures "
        "the per-event cost at a production-like density",
    )
    parser.add_argument("--bootstrap", default=os.environ.get("DISTILLGUARD_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temp dir)")
    parser.add_argument("--batch-size", type=int, default=50_000, help="worker's records per poll")
    parser.add_argument("--profile", action="store_true", help="run the worker under cProfile")
    parser.add_argument("--topic", help="reuse this topic, produced by an earlier run with the same --work")
    parser.add_argument("--raw-child", nargs=2, metavar=("TOPIC", "EXPECT"), help=argparse.SUPPRESS)
    parser.add_argument("--replay-child", nargs=2, metavar=("EVENTS", "ACCOUNTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_child:
        raw_consume(args.bootstrap, args.raw_child[0], int(args.raw_child[1]))
        return
    if args.replay_child:
        replay_child(*args.replay_child)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; broker {args.bootstrap}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    events, accounts = work / "events-padded.jsonl", work / "sim" / "accounts.jsonl.gz"
    if args.topic:
        if not events.is_file():
            parser.error(f"--topic needs the events of the run that produced it in --work ({events} missing)")
        topic = args.topic
        with events.open("rb") as fh:
            produced = sum(1 for _ in fh)
        print(f"reusing {topic} and its {produced:,} events")
    else:
        t = time.perf_counter()
        events, accounts, n, mean = simulate_padded(work, args.events, args.pad_to, args.seed, args.days)
        print(f"simulated {n:,} events, mean {mean:,.0f} bytes, in {time.perf_counter() - t:.1f} s")
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        produced, seconds = produce(args.bootstrap, topic, events)
        print(f"produced {produced:,} records to {topic} in {seconds:.1f} s ({produced / seconds:,.0f}/s)")

    # bench/ on the path for the raw child (this module), the repo for distillguard
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'bench'}:{REPO}", "DISTILLGUARD_KAFKA_BOOTSTRAP": args.bootstrap}
    out, wall_a, rc, rss_a, cpu_a = run_child(
        "bench_kafka", ["--bootstrap", args.bootstrap, "--raw-child", topic, str(produced)], env, work / "raw.log"
    )
    assert rc == 0, (work / "raw.log").read_text()[-2000:]
    raw = json.loads(out.strip().splitlines()[-1])
    raw_rate = raw["records"] / raw["seconds"]

    env_b = {
        **env,
        "DISTILLGUARD_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
        "DISTILLGUARD_DATA_DIR": str(work / "data"),
        "DISTILLGUARD_BATCH_SIZE": str(args.batch_size),
        "COLUMNS": "200",
    }
    for stale in ("bench.db", "replay.db", "data", "data-replay"):
        # a reused work directory: the worker must start afresh (no checkpoint), as replay does
        path = work / stale
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
    worker_args = ["consume", "--topic", topic, "--group", f"bench-{topic}-{uuid.uuid4().hex[:6]}", "--stop-at-end"]
    worker_args += ["--accounts", str(accounts), "--accounts-topic", "", "--decisions-topic", f"{topic}-decisions"]
    worker_args += ["--report", str(work / "report.json")]
    profile = work / "worker.prof" if args.profile else None
    out, wall_b, rc, rss_b, cpu_b = run_child("distillguard", worker_args, env_b, work / "worker.log", profile=profile)
    assert rc == 0, (work / "worker.log").read_text()[-3000:]
    m = re.search(r"consumed ([\d,]+) records in ([\d.]+) s", out)
    assert m, out[-2000:]
    e2e_records, e2e_seconds = int(m[1].replace(",", "")), float(m[2])
    e2e_rate = e2e_records / e2e_seconds
    # the worker's own account of where its time went (its last log line)
    stages = dict(re.findall(r"\b(partition|ring|waiting_for_partition)_s=([\d.]+)", (work / "worker.log").read_text()))

    env_c = {
        **env_b,
        "DISTILLGUARD_DATABASE_URL": f"sqlite:///{work / 'replay.db'}",
        "DISTILLGUARD_DATA_DIR": str(work / "data-replay"),
    }
    out, wall_c, rc, rss_c, cpu_c = run_child(
        "bench_kafka", ["--replay-child", str(events), str(accounts)], env_c, work / "replay.log"
    )
    assert rc == 0, (work / "replay.log").read_text()[-3000:]
    rep = json.loads(out.strip().splitlines()[-1])
    replay_rate = rep["records"] / rep["seconds"]

    print()
    print(f"{'':<34}{'raw kafka-python':>18}{'distillguard consume':>22}{'replay (no Kafka)':>19}")
    print(f"{'records':<34}{raw['records']:>18,}{e2e_records:>22,}{rep['records']:>19,}")
    print(f"{'seconds (first record to end)':<34}{raw['seconds']:>18.1f}{e2e_seconds:>22.1f}{rep['seconds']:>19.1f}")
    print(f"{'events/s':<34}{raw_rate:>18,.0f}{e2e_rate:>22,.0f}{replay_rate:>19,.0f}")
    print(f"{'process wall seconds (incl. start)':<34}{wall_a:>18.1f}{wall_b:>22.1f}{wall_c:>19.1f}")
    print(f"{'peak RSS, VmHWM (MiB)':<34}{rss_a:>18,}{rss_b:>22,}{rss_c:>19,}")
    # CPU over wall time says how much of the two cores a process got: overlap needs an idle one
    print(f"{'CPU seconds, user+sys (incl. start)':<34}{cpu_a:>18.1f}{cpu_b:>22.1f}{cpu_c:>19.1f}")
    if stages:
        print(
            "consume worker, wall seconds per stage: partition stage (its thread) "
            f"{float(stages.get('partition', 0)):.1f}, ring stage with persisting and publishing "
            f"{float(stages.get('ring', 0)):.1f}, loop waiting for the partition stage "
            f"{float(stages.get('waiting_for_partition', 0)):.1f}"
        )
    ratio = e2e_rate / raw_rate
    print(f"end-to-end / raw = {ratio:.1%} (target >= 70%); end-to-end {e2e_rate:,.0f}/s (target >= 25,000/s)")
    print(
        f"end-to-end / replay = {e2e_rate / replay_rate:.1%} (the consumer's own cost is the rest); "
        f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"peak RSS of this script (simulation, producer): {own} MiB")
    if args.profile:
        owners(work / "worker.prof")


if __name__ == "__main__":
    main()
