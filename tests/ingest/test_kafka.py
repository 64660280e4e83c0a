"""Streaming through the real Kafka broker (deploy/kafka/broker.sh): issue 3, done-when 1-4.

One small simulated log, with 1,000 malformed records mixed in, is produced once to a fresh topic,
its account events (and a few malformed ones) to a topic of their own, and consumed by several
workers (each its own group and database): an undisturbed in-process run, one whose database fails
mid-stream (account events from the file instead), and `distillguard consume` subprocesses stopped
by SIGTERM and killed by SIGKILL. All must match `replay` of the same files.
"""

from __future__ import annotations

import gzip
import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import REPO, corpus_path
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from report_contract import validate_report
from sim_fixtures import Replayed, replay_into, simulate_small
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from core.db import make_engine, make_sessionmaker
from core.migrations import upgrade
from core.settings import Settings
from ingest.consumer import ConsumeOptions, ConsumeResult, StreamWorker, consume
from ingest.kafka_io import produce_files

pytestmark = pytest.mark.kafka

N_MALFORMED = 1000
N_MALFORMED_ACCOUNTS = 25
SIM = {"accounts": 400, "days": 0.5}


def _malformed(i: int) -> tuple[bytes, str]:
    """The i-th malformed record (unique, so each can be found in the dead-letter topic) and its reason."""
    kinds = [
        (b"{not json at all %d" % i, "not JSON"),
        (b'["an", "array", %d]' % i, "not a JSON object"),
        (b'{"ts": "2026-05-01T10:00:00Z", "account_id": "acct_bad", "n": %d}' % i, "missing required field: event_id"),
        (b'{"event_id": "bad-ts-%d", "ts": "last tuesday", "account_id": "acct_bad"}' % i, "unparseable ts"),
        (
            b'{"event_id": "bad-type-%d", "ts": "2026-05-01T10:00:00Z", "account_id": "acct_bad", "status": "ok"}' % i,
            "wrong type: status",
        ),
        (
            b'{"event_id": "neg-%d", "ts": "2026-05-01T10:00:00Z", "account_id": "acct_bad", "prompt_tokens": -4}' % i,
            "invalid prompt_tokens",
        ),
    ]
    return kinds[i % len(kinds)]


@dataclass
class Stream:
    """The simulated log in a topic, and its replay as the reference."""

    bootstrap: str
    topic: str
    accounts_topic: str
    account_events: int
    malformed_accounts: dict[bytes, str]
    directory: Path
    mixed: Path
    good: int
    malformed: dict[bytes, str]
    replayed: Replayed

    def settings(self, name: str, **overrides: Any) -> Settings:
        db = self.directory / f"{name}.db"
        return Settings(
            database_url=f"sqlite:///{db}",
            data_dir=self.directory / f"state-{name}",
            kafka_bootstrap=self.bootstrap,
            **overrides,
        )

    def options(self, name: str, **overrides: Any) -> ConsumeOptions:
        params: dict[str, Any] = {
            "topic": self.topic,
            "group": f"{self.topic}-{name}",
            "stop_at_end": True,
            "report_path": self.directory / f"{name}.report.json",
            "accounts": None,
            "accounts_topic": self.accounts_topic,
            "decisions_topic": f"{self.topic}-decisions-{name}",
        }
        return ConsumeOptions(**{**params, **overrides})


@pytest.fixture(scope="module")
def stream(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Stream:
    d = simulate_small(tmp_path_factory.mktemp("kafka"), corpus_path(), **SIM)
    lines = gzip.decompress((d / "events.jsonl.gz").read_bytes()).splitlines()
    step = max(1, len(lines) // N_MALFORMED)
    mixed: list[bytes] = []
    malformed: dict[bytes, str] = {}
    for i, good in enumerate(lines):
        mixed.append(good)
        if i % step == 0 and len(malformed) < N_MALFORMED:
            raw, reason = _malformed(len(malformed))
            malformed[raw] = reason
            mixed.append(raw)
    assert len(malformed) == N_MALFORMED
    (d / "mixed.jsonl").write_bytes(b"\n".join(mixed) + b"\n")
    replayed = replay_into(d, f"sqlite:///{d / 'replay.db'}", events=d / "mixed.jsonl")
    # account events on their own topic, with malformed ones (the replay reads the clean file)
    account_lines = gzip.decompress((d / "accounts.jsonl.gz").read_bytes()).splitlines()
    bad_accounts = {
        (
            b'{"account_id": "acct_bad", "ts": "2026-05-01T10:00:00Z", "type": "moved_house", "n": %d}' % i
            if i % 2
            else b"{broken account event %d" % i
        ): ("invalid type" if i % 2 else "not JSON")
        for i in range(N_MALFORMED_ACCOUNTS)
    }
    (d / "accounts-mixed.jsonl").write_bytes(b"\n".join([*account_lines, *bad_accounts]) + b"\n")
    topic = f"dg-test-{uuid.uuid4().hex[:10]}"
    producer = KafkaProducer(bootstrap_servers=bootstrap.split(","), linger_ms=20, acks="all")
    try:
        n = produce_files([d / "mixed.jsonl"], producer=producer, topic=topic)
        n_accounts = produce_files([d / "accounts-mixed.jsonl"], producer=producer, topic=f"{topic}-accounts")
    finally:
        producer.close()
    assert n == len(mixed) and n_accounts == len(account_lines) + N_MALFORMED_ACCOUNTS
    return Stream(
        bootstrap,
        topic,
        f"{topic}-accounts",
        len(account_lines),
        bad_accounts,
        d,
        d / "mixed.jsonl",
        len(lines),
        malformed,
        replayed,
    )


@pytest.fixture(scope="module")
def undisturbed(stream: Stream) -> tuple[ConsumeResult, StreamWorker]:
    """One worker over the whole topic, in this process."""
    workers: list[StreamWorker] = []
    result = consume(stream.settings("plain"), stream.options("plain"), on_ready=workers.append)
    return result, workers[0]


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60) -> list[Any]:
    """Every record of a topic, from the beginning to the current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} not found"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, "reading the topic timed out"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def alerts_of(database_url: str) -> list[tuple[Any, ...]]:
    """Detector-owned alert fields and ring memberships, in a stable order."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            alerts = conn.execute(
                text(
                    "SELECT alert_key, account_id, ring_id, score, severity, action, first_flagged_ts,"
                    " last_scored_ts, n_events, reasons FROM alerts ORDER BY alert_key"
                )
            ).all()
            rings = conn.execute(
                text(
                    "SELECT r.ring_id, r.size, r.score, r.first_flagged_ts, m.account_id FROM rings r"
                    " JOIN ring_members m ON m.ring_id = r.ring_id ORDER BY r.ring_id, m.account_id"
                )
            ).all()
        return [tuple(a) for a in alerts] + [("ring", *r) for r in rings]
    finally:
        engine.dispose()


def _same_detection(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["events"] == want["events"]
    assert got["window"] == want["window"]
    assert got["accounts"] == want["accounts"]
    assert got["rings"] == want["rings"]


# --- done-when 1: Kafka gives the same report as replay --------------------------------------


def test_consumed_topic_gives_the_same_report_as_replay(
    stream: Stream, undisturbed: tuple[ConsumeResult, StreamWorker]
) -> None:
    result, _ = undisturbed
    assert result.reached_end
    want = stream.replayed.report
    assert any(a["flagged"] for a in want["accounts"]), "the reference flags nothing: a vacuous comparison"
    _same_detection(result.report, want)
    on_disk = orjson.loads((stream.directory / "plain.report.json").read_bytes())
    validate_report(on_disk)
    _same_detection(on_disk, want)
    assert alerts_of(stream.settings("plain").database_url) == alerts_of(stream.replayed.database_url)


# --- done-when 3: every malformed record in the dead-letter topic, every good one processed ------


def test_malformed_records_land_in_the_dead_letter_topic(
    stream: Stream, undisturbed: tuple[ConsumeResult, StreamWorker]
) -> None:
    result, _ = undisturbed
    events = result.report["events"]
    assert events == {
        "read": stream.good + N_MALFORMED,
        "accepted": stream.good,
        "rejected": N_MALFORMED,
        "duplicates": 0,
    }
    dead = read_topic(stream.bootstrap, f"{stream.topic}.dlq")
    assert len(dead) == N_MALFORMED and result.dead_letters == N_MALFORMED + N_MALFORMED_ACCOUNTS
    seen: set[bytes] = set()
    for rec in dead:
        doc = orjson.loads(rec.value)
        raw = doc["raw"].encode()
        assert stream.malformed[raw] in doc["reason"], (doc["reason"], raw)
        topic, _, where = doc["source"].rpartition("/")
        assert topic == stream.topic and "@" in where
        # the original key travels with it: the account when the record named one
        assert rec.key == (b"acct_bad" if b'"acct_bad"' in raw else None)
        seen.add(raw)
    assert seen == set(stream.malformed)


def test_account_events_come_from_their_topic_and_malformed_ones_are_dead_lettered(
    stream: Stream, undisturbed: tuple[ConsumeResult, StreamWorker]
) -> None:
    _, worker = undisturbed
    assert worker.metrics.account_events == stream.account_events
    dead = read_topic(stream.bootstrap, f"{stream.accounts_topic}.dlq")
    assert len(dead) == N_MALFORMED_ACCOUNTS
    for rec in dead:
        doc = orjson.loads(rec.value)
        assert stream.malformed_accounts[doc["raw"].encode()] in doc["reason"], doc
        assert doc["source"].startswith(f"{stream.accounts_topic}/")
    assert worker.metrics.dead_letters == N_MALFORMED + N_MALFORMED_ACCOUNTS


# --- done-when 4: account-decisions holds the latest action of every flagged account ----------


def test_decisions_topic_holds_the_latest_action_of_every_flagged_account(
    stream: Stream, undisturbed: tuple[ConsumeResult, StreamWorker]
) -> None:
    result, worker = undisturbed
    topic = f"{stream.topic}-decisions-plain"
    latest: dict[str, dict[str, Any]] = {}
    for rec in read_topic(stream.bootstrap, topic):
        doc = orjson.loads(rec.value)
        assert rec.key.decode() == doc["account_id"]
        assert doc["source"] == "detector" and doc["decided_at"].endswith("Z")
        latest[doc["account_id"]] = doc
    flags = worker.pipeline.engine.flags
    assert flags and set(latest) == set(flags)
    for account_id, flag in flags.items():
        assert latest[account_id]["action"] == flag.action, account_id
    for account in result.report["accounts"]:
        if account["flagged"]:
            assert latest[account["account_id"]]["action"] == account["action"]
    admin = KafkaAdminClient(bootstrap_servers=stream.bootstrap.split(","))
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    assert "'cleanup.policy', 'compact'" in repr(described) or "compact" in repr(described)


# --- the database going down mid-stream: back off, retry, lose nothing --------------------------


class FlakySessions:
    """A sessionmaker whose calls 2 to 4 fail as if the database were down."""

    def __init__(self, database_url: str) -> None:
        upgrade(database_url)
        self.engine = make_engine(database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.calls = 0
        self.failures = 0

    def __call__(self) -> Any:
        self.calls += 1
        if 2 <= self.calls <= 4:
            self.failures += 1
            raise OperationalError("connect", {}, Exception("connection refused (simulated)"))
        return self.sessions()


def test_database_outage_backs_off_and_resumes_without_loss(stream: Stream) -> None:
    # small polls: the outage then falls mid-stream however the partitions interleave
    settings = stream.settings("flaky", batch_size=300)
    flaky = FlakySessions(settings.database_url)
    workers: list[StreamWorker] = []
    try:
        result = consume(
            settings,
            # account events from the file, read at the start, as replay reads them
            stream.options(
                "flaky",
                backoff_initial_s=0.05,
                backoff_max_s=0.2,
                decisions_topic=None,
                accounts=stream.directory / "accounts.jsonl.gz",
                accounts_topic=None,
            ),
            sessions=flaky,
            on_ready=workers.append,  # type: ignore[arg-type]
        )
    finally:
        flaky.engine.dispose()
    assert flaky.failures == 3, f"{flaky.calls} database sessions, {workers[0].metrics.batches} batches"
    assert workers[0].metrics.db_failures == 3
    _same_detection(result.report, stream.replayed.report)
    assert alerts_of(settings.database_url) == alerts_of(stream.replayed.database_url)


# --- done-when 2: SIGTERM and SIGKILL mid-stream, restart, same alerts, no duplicates -------------


def _consume_cmd(stream: Stream, name: str, *extra: str) -> list[str]:
    opts = stream.options(name)
    return [
        sys.executable,
        "-m",
        "distillguard",
        "consume",
        "--topic",
        stream.topic,
        "--group",
        opts.group,
        "--accounts-topic",
        str(opts.accounts_topic),
        "--decisions-topic",
        str(opts.decisions_topic),
        "--report",
        str(opts.report_path),
        "--checkpoint-interval",
        "0",
        *extra,
    ]


def _env(stream: Stream, name: str) -> dict[str, str]:
    settings = stream.settings(name)
    return {
        **os.environ,
        "DISTILLGUARD_KAFKA_BOOTSTRAP": stream.bootstrap,
        "DISTILLGUARD_DATABASE_URL": settings.database_url,
        "DISTILLGUARD_DATA_DIR": str(settings.data_dir),
        # small polls, so there is a middle of the stream to be killed in
        "DISTILLGUARD_BATCH_SIZE": "400",
        "PYTHONPATH": str(REPO),
    }


def _checkpointed_records(stream: Stream, name: str) -> int:
    path = stream.settings(name).data_dir / "checkpoints" / f"{stream.options(name).group}.pkl"
    if not path.is_file():
        return 0
    return int(pickle.loads(path.read_bytes())["counts"].read)


def _run_until(proc: subprocess.Popen[bytes], stream: Stream, name: str, records: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while _checkpointed_records(stream, name) < records:
        assert proc.poll() is None, f"consumer exited early with {proc.returncode}"
        assert time.monotonic() < deadline, "consumer made no progress"
        time.sleep(0.05)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def _scrape(port_file_log: Path, proc: subprocess.Popen[bytes], port: int, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                body: str = resp.read().decode()
                if "distillguard_consumer_lag{" in body:
                    return body
        except OSError:
            pass
        assert proc.poll() is None, port_file_log.read_text()[-2000:]
        assert time.monotonic() < deadline, "no metrics served"
        time.sleep(0.2)


def test_sigterm_and_sigkill_mid_stream_then_restart_give_the_same_alerts(
    stream: Stream,
    undisturbed: tuple[ConsumeResult, StreamWorker],
    procs: list[subprocess.Popen[bytes]],
) -> None:
    name = "killed"
    env = _env(stream, name)
    total = stream.good + N_MALFORMED
    log = stream.directory / f"{name}.log"
    port = 19000 + os.getpid() % 1000

    # 1. SIGTERM: the batch in hand finishes, offsets are committed, the group is left, exit 0
    with log.open("ab") as out:
        proc = subprocess.Popen(
            _consume_cmd(stream, name, "--metrics-port", str(port)), env=env, cwd=REPO, stdout=out, stderr=out
        )
    procs.append(proc)
    metrics = _scrape(log, proc, port)
    assert 'distillguard_consumer_lag{topic="' in metrics and "distillguard_batch_seconds_count" in metrics
    assert 'distillguard_stage_seconds_total{stage="partition"}' in metrics
    _run_until(proc, stream, name, total // 4)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    stopped_at = _checkpointed_records(stream, name)
    assert stopped_at < total, "nothing left to resume: the test would prove nothing"
    consumer = KafkaConsumer(bootstrap_servers=stream.bootstrap.split(","), group_id=stream.options(name).group)
    try:
        committed = sum(consumer.committed(TopicPartition(stream.topic, p)) or 0 for p in range(4))
    finally:
        consumer.close()
    assert committed == stopped_at, "SIGTERM must commit what the checkpoint holds"

    # 2. SIGKILL: no goodbye; the checkpoint and the commit may disagree
    with log.open("ab") as out:
        proc = subprocess.Popen(_consume_cmd(stream, name), env=env, cwd=REPO, stdout=out, stderr=out)
    procs.append(proc)
    _run_until(proc, stream, name, stopped_at + (total - stopped_at) // 2)
    proc.kill()
    proc.wait()
    assert _checkpointed_records(stream, name) < total

    # 3. restart to the end
    with log.open("ab") as out:
        proc = subprocess.Popen(_consume_cmd(stream, name, "--stop-at-end"), env=env, cwd=REPO, stdout=out, stderr=out)
    procs.append(proc)
    assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]

    plain, _ = undisturbed
    report = orjson.loads(stream.options(name).report_path.read_bytes())  # type: ignore[union-attr]
    # counts prove each event was counted once across the three lives of the worker
    _same_detection(report, plain.report)
    alerts = alerts_of(stream.settings(name).database_url)
    assert alerts == alerts_of(stream.settings("plain").database_url)
    keys = [a[0] for a in alerts if a[0] != "ring"]
    assert len(keys) == len(set(keys)) and keys
    # and the decisions topic converged to the same latest actions
    latest = {
        r.key: orjson.loads(r.value)["action"] for r in read_topic(stream.bootstrap, f"{stream.topic}-decisions-{name}")
    }
    want = {
        r.key: orjson.loads(r.value)["action"] for r in read_topic(stream.bootstrap, f"{stream.topic}-decisions-plain")
    }
    assert latest == want
