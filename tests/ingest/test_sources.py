"""Tests for ingest/sources.py: NDJSON lines keep their numbers across batches, blanks and CRs dropped."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from ingest.contract import SOURCE
from ingest.sources import FileSource

GOOD = {
    "event_id": "e",
    "ts": "2026-05-01T12:00:00Z",
    "account_id": "a",
    "ip": "203.0.113.7",
    "user_agent": "ua",
    "model": "m",
    "endpoint": "/v1/messages",
    "prompt_tokens": 5,
    "completion_tokens": 9,
    "status": 200,
}


def write(path: Path, lines: list[bytes], *, sep: bytes, trailing: bool) -> None:
    body = sep.join(lines) + (sep if trailing else b"")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(body))
    else:
        path.write_bytes(body)


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
@pytest.mark.parametrize("trailing", [True, False])
def test_lines_keep_their_numbers_across_batches(tmp_path: Path, name: str, sep: bytes, trailing: bool) -> None:
    lines: list[bytes] = []
    bad: list[int] = []
    for i in range(1, 60):
        if i % 7 == 0:
            lines.append(b"   ")  # blank: not a record
        elif i % 11 == 0:
            lines.append(b"{not json")
            bad.append(i)
        else:
            lines.append(orjson.dumps({**GOOD, "event_id": f"e{i}"}))
    path = tmp_path / name
    write(path, lines, sep=sep, trailing=trailing)
    batches = list(FileSource(path).batches(batch_size=10, max_bytes=1 << 20))
    accepted = [e for b in batches for e in b.accepted.get_column("event_id").to_list()]
    rejected = [r for b in batches for r in b.rejected.get_column(SOURCE).to_list()]
    assert accepted == [f"e{i}" for i in range(1, 60) if i % 7 and i % 11]
    assert rejected == [f"{path}:{i}" for i in bad]
    assert all(b.n_read <= 10 for b in batches)
