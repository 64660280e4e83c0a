"""The stream path's pieces that need no broker: metrics text, dead-letter sink, decisions, checkpoint file."""

from __future__ import annotations

import pickle
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from core.errors import InputError
from core.settings import Settings
from detector.engine import DetectionEngine, Flag
from detector.publisher import Decision, NullDecisionPublisher, changed_decisions, decision_message
from ingest.consumer import CHECKPOINT_VERSION, ConsumeOptions, StreamWorker, write_atomic
from ingest.contract import decode_records
from ingest.kafka_io import KafkaDeadLetter, file_lines, key_of, parse_position, position
from ingest.metrics import MetricsServer, StreamMetrics
from ingest.replay import detector_config


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.flushes = 0

    def send(self, topic: str, *, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))

    def flush(self) -> None:
        self.flushes += 1


def test_positions_round_trip() -> None:
    assert parse_position(position("api-requests.v2/x", 3, 1234)) == ("api-requests.v2/x", 3, 1234)
    assert parse_position("events.jsonl:12") is None


def test_dead_letter_sends_each_reject_once_with_its_key_even_when_a_batch_is_retried() -> None:
    lines = [
        b'{"event_id": "e1", "ts": "2026-05-01T00:00:00Z", "account_id": "a1"}',
        b"{oops",
        b'{"event_id": "e3", "ts": "yesterday", "account_id": "a3"}',
        b"[1]",
    ]
    positions = [position("t", 0, 10 + i) for i in range(len(lines))]
    batch = decode_records(lines, source="t/0", positions=positions)
    # decode_records lists JSON failures before value failures: not in offset order
    assert batch.rejected.get_column("source").to_list() != sorted(batch.rejected.get_column("source").to_list())
    producer = FakeProducer()
    keys = {position("t", 0, 12): b"a3"}
    sink = KafkaDeadLetter(producer, "t.dlq", keys=keys.get)
    assert sink.write(batch.rejected) == 3
    assert sink.write(batch.rejected) == 0  # the same batch after a rollback
    assert sink.count == 3
    docs = {orjson.loads(v)["source"]: (k, orjson.loads(v)) for _, k, v in producer.sent}
    assert set(docs) == {"t/0@11", "t/0@12", "t/0@13"}
    assert docs["t/0@12"][0] == b"a3" and "unparseable ts" in docs["t/0@12"][1]["reason"]
    assert docs["t/0@11"][1]["raw"] == "{oops"


def test_keys_and_file_lines_pass_malformed_lines_through(tmp_path: Path) -> None:
    f = tmp_path / "e.jsonl"
    f.write_bytes(b'{"account_id": "a1", "x": 1}\n\n{broken\n["a"]\n')
    lines = list(file_lines(f))
    assert lines == [b'{"account_id": "a1", "x": 1}', b"{broken", b'["a"]']
    assert [key_of(x, "account_id") for x in lines] == [b"a1", None, None]
    pq = tmp_path / "e.parquet"
    pl.DataFrame(
        {"event_id": ["e1"], "ts": [datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)], "account_id": ["a1"]}
    ).write_parquet(pq)
    (row,) = list(file_lines(pq))
    assert orjson.loads(row) == {"event_id": "e1", "ts": "2026-05-01T12:00:00.123Z", "account_id": "a1"}
    assert decode_records([row]).accepted.height == 1


def test_decisions_are_published_on_action_changes_only() -> None:
    tick = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
    flags = {"a": Flag("a", tick, 0.97, tick, ring_id="r-1", action="require_kyc")}
    published: dict[str, str] = {}
    first = changed_decisions(flags, published, decided_at=tick)
    assert [(d.account_id, d.action, d.ring_id) for d in first] == [("a", "require_kyc", "r-1")]
    flags["a"].score = 0.99
    assert changed_decisions(flags, published, decided_at=tick) == []
    flags["a"].action = "block"
    (again,) = changed_decisions(flags, published, decided_at=tick)
    key, value = decision_message(again)
    doc = orjson.loads(value)
    assert key == b"a"
    assert doc == {
        "account_id": "a",
        "action": "block",
        "reason": "member of ring r-1",
        "score": 0.99,
        "ring_id": "r-1",
        "decided_at": "2026-05-01T01:00:00.000Z",
        "source": "detector",
    }


def test_decision_mappings_from_the_api_are_accepted_and_checked() -> None:
    key, value = decision_message(
        {"account_id": "b", "action": "allow", "reason": "false positive", "source": "analyst:kim", "rpm_limit": None}
    )
    doc = orjson.loads(value)
    assert key == b"b" and doc["source"] == "analyst:kim" and doc["decided_at"].endswith("Z")
    assert "rpm_limit" in doc and doc["score"] is None
    with pytest.raises(ValueError, match="action"):
        NullDecisionPublisher().publish([{"account_id": "b", "action": "ban"}])
    with pytest.raises(ValueError):
        Decision("c", "block", "x", datetime(2026, 5, 1))  # naive


def test_metrics_exposition_is_prometheus_text() -> None:
    m = StreamMetrics()
    m.observe_batch(read=1000, accepted=990, rejected=10, seconds=0.3)
    m.add(dead_letters=10, alerts_raised=2, alerts_written=5)
    m.set_lag({("api-requests", 0): 12, ("api-requests", 1): 0})
    m.add_stage_seconds("partition", 1.5)
    m.add_stage_seconds("ring", 0.25)
    m.add_stage_seconds("ring", 0.5)
    server = MetricsServer(m, port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    finally:
        server.close()
    samples: dict[str, Any] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['distillguard_records_total{outcome="rejected"}'] == 10
    assert samples['distillguard_consumer_lag{topic="api-requests",partition="0"}'] == 12
    assert samples["distillguard_dead_letters_total"] == 10
    assert samples["distillguard_alerts_raised_total"] == 2
    assert samples['distillguard_batch_seconds_bucket{le="0.25"}'] == 0
    assert samples['distillguard_batch_seconds_bucket{le="0.5"}'] == 1
    assert samples["distillguard_batch_seconds_count"] == 1
    assert samples["distillguard_events_per_second"] > 0
    assert samples['distillguard_stage_seconds_total{stage="partition"}'] == 1.5
    assert samples['distillguard_stage_seconds_total{stage="ring"}'] == 0.75
    assert samples['distillguard_stage_seconds_total{stage="waiting_for_partition"}'] == 0


def test_checkpoint_writes_are_atomic(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "g.pkl"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["g.pkl"]


def test_a_checkpoint_of_another_engine_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    worker = StreamWorker(settings, ConsumeOptions(topic="api-requests", group="g"))
    engine = DetectionEngine(detector_config(settings))
    doc = {"version": CHECKPOINT_VERSION, "topic": "api-requests", "engine": engine}
    fields = sorted(vars(engine))
    write_atomic(worker.checkpoint_file, pickle.dumps({**doc, "engine_fields": fields}))
    assert worker._load_checkpoint() is not None
    # an older engine lacked a field this one has (e.g. value_counts): resuming it would crash mid-stream
    older = [f for f in fields if f != "value_counts"]
    write_atomic(worker.checkpoint_file, pickle.dumps({**doc, "engine_fields": older}))
    with pytest.raises(InputError, match="detector state of another version"):
        worker._load_checkpoint()


def test_an_account_events_partition_that_is_behind_holds_the_watermark_back(tmp_path: Path) -> None:
    from ingest.consumer import EPOCH, _Taken

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    worker = StreamWorker(settings, ConsumeOptions(topic="reqs", accounts_topic="accts", group="g"))
    assert worker.options.topics == ["reqs", "accts"]
    early, late = datetime(2026, 5, 1, 10, tzinfo=UTC), datetime(2026, 5, 1, 12, tzinfo=UTC)
    worker._state.latest_ts = {("reqs", 0): late, ("reqs", 1): late, ("accts", 0): early}

    def mark(*open_partitions: tuple[str, int]) -> datetime | None:
        return worker._watermark(_Taken(records={}, open_partitions=list(open_partitions), polled_at=0.0))

    # the account events before 12:00 may not all be in: no tick past 10:00 runs yet
    assert mark(("reqs", 0), ("reqs", 1), ("accts", 0)) == early
    # at its end it holds nothing back; one that has delivered nothing yet holds everything
    assert mark(("reqs", 0), ("reqs", 1)) == late
    assert mark(("reqs", 0), ("accts", 1)) == EPOCH
    # the same partition number in two topics is two partitions
    worker._state.latest_ts[("accts", 1)] = late
    assert mark(("reqs", 1), ("accts", 1)) == late
    assert ConsumeOptions(topic="reqs", accounts_topic=None).topics == ["reqs"]
