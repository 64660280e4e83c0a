"""Replay end to end: a simulated log with malformed lines mixed in flags the planted ring."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import polars as pl
import pytest
from conftest import corpus_path
from report_contract import validate_report
from sim_fixtures import Replayed, replay_into, simulate_small

from core.errors import InputError
from core.settings import Settings
from ingest.replay import replay

MALFORMED = [
    (b"{not json at all", "not JSON"),
    (b'["an", "array"]', "not a JSON object"),
    (b'{"ts": "2026-05-01T10:00:00Z", "account_id": "acct_x"}', "missing required field: event_id"),
    (b'{"event_id": "bad-ts", "ts": "last tuesday", "account_id": "acct_x"}', "unparseable ts"),
    (
        b'{"event_id": "bad-type", "ts": "2026-05-01T10:00:00Z", "account_id": "acct_x", "status": "ok"}',
        "wrong type: status",
    ),
    (
        b'{"event_id": "neg", "ts": "2026-05-01T10:00:00Z", "account_id": "acct_x", "prompt_tokens": -4}',
        "invalid prompt_tokens",
    ),
]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replayed:
    d = simulate_small(tmp_path_factory.mktemp("sim"), corpus_path())
    # mix malformed lines into the real log, every ~1000 lines, and remember where they went
    lines = gzip.decompress((d / "events.jsonl.gz").read_bytes()).splitlines()
    mixed: list[bytes] = []
    for i, good in enumerate(lines):
        mixed.append(good)
        if i % 1000 == 500:
            mixed.append(MALFORMED[(i // 1000) % len(MALFORMED)][0])
    (d / "mixed.jsonl").write_bytes(b"\n".join(mixed) + b"\n")
    db = tmp_path_factory.mktemp("db") / "replay.db"
    return replay_into(d, f"sqlite:///{db}", events=d / "mixed.jsonl")


def test_report_validates_against_contract_section_3(replayed: Replayed) -> None:
    on_disk = orjson.loads((replayed.directory / "report.json").read_bytes())
    assert on_disk == orjson.loads(orjson.dumps(replayed.report))
    validate_report(on_disk)


def test_counts_add_up_and_every_malformed_line_is_in_the_rejected_file(replayed: Replayed) -> None:
    lines = (replayed.directory / "mixed.jsonl").read_bytes().splitlines()
    n_bad = sum(1 for line in lines if line in {m for m, _ in MALFORMED})
    ev = replayed.report["events"]
    assert ev["read"] == len(lines)
    assert ev["rejected"] == n_bad > 0
    assert ev["accepted"] == len(lines) - n_bad
    rejected_file = replayed.directory / "mixed.rejected.jsonl"
    assert replayed.result.rejected_files == [rejected_file]
    rejected = [orjson.loads(x) for x in rejected_file.read_bytes().splitlines()]
    assert len(rejected) == n_bad
    expected = dict(MALFORMED)
    for r in rejected:
        assert expected[r["raw"].encode()] in r["reason"]
        path, _, lineno = r["source"].rpartition(":")
        assert path.endswith("mixed.jsonl")
        assert lines[int(lineno) - 1].decode() == r["raw"]


def test_planted_rings_are_flagged_with_few_false_alarms(replayed: Replayed) -> None:
    truth = replayed.truth["accounts"]
    flagged = {a["account_id"] for a in replayed.report["accounts"] if a["flagged"]}
    attackers = {a for a, v in truth.items() if v["label"] == "attacker"}
    benign = {a for a, v in truth.items() if v["label"] != "attacker"}
    assert flagged, "nothing flagged"
    precision = len(flagged & attackers) / len(flagged)
    assert precision >= 0.9, f"precision {precision:.3f}"
    assert len(flagged & benign) <= max(2, 0.005 * len(benign))
    # at least one planted campaign is caught as a ring, mostly whole
    rings = replayed.report["rings"]
    assert rings
    best = 0.0
    for campaign in replayed.truth["campaigns"]:
        members = set(campaign["accounts"])
        for ring in rings:
            caught = len(members & set(ring["members"])) / len(members)
            best = max(best, caught)
    assert best >= 0.8, f"best ring covers {best:.0%} of a campaign"


def test_every_flagged_account_explains_itself(replayed: Replayed) -> None:
    for a in replayed.report["accounts"]:
        assert a["reasons"], a["account_id"]
        for r in a["reasons"]:
            assert r["feature"] and r["detail"]
    for r in replayed.report["rings"]:
        assert r["evidence"], r["ring_id"]


def test_replay_is_deterministic_and_idempotent(replayed: Replayed, tmp_path: Path) -> None:
    again = replay_into(replayed.directory, replayed.database_url, events=replayed.directory / "mixed.jsonl")
    assert again.report == replayed.report


def test_parquet_input_gives_the_same_report(replayed: Replayed, tmp_path: Path) -> None:
    src = replayed.directory / "events.jsonl.gz"
    pq = tmp_path / "events.parquet"
    pl.read_ndjson(src).write_parquet(pq)
    got = replay_into(replayed.directory, f"sqlite:///{tmp_path / 'pq.db'}", events=pq)
    plain = replay_into(replayed.directory, f"sqlite:///{tmp_path / 'plain.db'}", events=src)
    assert got.report["accounts"] == plain.report["accounts"]
    assert got.report["rings"] == plain.report["rings"]


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        replay([tmp_path / "nope.jsonl"], settings=Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
