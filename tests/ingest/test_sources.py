"""Tests for ingest/sources.py: NDJSON lines keep their numbers across batches, blanks and CRs dropped."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from core.errors import InputError
from ingest.contract import SOURCE, LazyPositions
from ingest.sources import FileSource, prefetched

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
# tiny blocks cut records, CRLF pairs and blank lines at every place a block can end
@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 22])
def test_lines_keep_their_numbers_across_batches(
    tmp_path: Path, name: str, sep: bytes, trailing: bool, block_bytes: int
) -> None:
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
    batches = list(FileSource(path, block_bytes=block_bytes).batches(batch_size=10, max_bytes=1 << 20))
    accepted = [e for b in batches for e in b.accepted.get_column("event_id").to_list()]
    rejected = [r for b in batches for r in b.rejected.get_column(SOURCE).to_list()]
    assert accepted == [f"e{i}" for i in range(1, 60) if i % 7 and i % 11]
    assert rejected == [f"{path}:{i}" for i in bad]
    assert all(b.n_read <= 10 for b in batches)


def test_truncated_gzip_keeps_what_was_read_and_names_the_damage(tmp_path: Path) -> None:
    body = b"\n".join(orjson.dumps({**GOOD, "event_id": f"e{i}"}) for i in range(2000)) + b"\n"
    path = tmp_path / "events.jsonl.gz"
    whole = gzip.compress(body)
    path.write_bytes(whole[: len(whole) * 2 // 3])
    got: list[str] = []
    with pytest.raises(InputError, match="cannot read past line"):
        for batch in FileSource(path, block_bytes=4096).batches(batch_size=100, max_bytes=1 << 20):
            got += batch.accepted.get_column("event_id").to_list()
    assert got and got == [f"e{i}" for i in range(len(got))]


def test_prefetched_yields_in_order_and_raises_where_the_source_failed() -> None:
    def source() -> Iterator[int]:
        yield from range(5)
        raise InputError("damaged at 5")

    got: list[int] = []
    with pytest.raises(InputError, match="damaged at 5"):
        for x in prefetched(source(), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_prefetched_stops_and_closes_its_source_when_the_caller_stops() -> None:
    closed: list[bool] = []

    def source() -> Iterator[int]:
        try:
            yield from range(1000)
        finally:
            closed.append(True)

    batches = prefetched(source())
    assert [next(batches), next(batches)] == [0, 1]
    batches.close()  # the caller stops early: the reader thread must not hang on a full queue
    assert closed == [True]


def test_lazy_positions_format_only_what_is_read() -> None:
    asked: list[int] = []

    def where(j: int) -> str:
        asked.append(j)
        return f"f:{j + 1}"

    positions = LazyPositions(5, where)
    assert len(positions) == 5 and asked == []
    assert positions[3] == "f:4" and positions[-1] == "f:5" and positions[1:3] == ["f:2", "f:3"]
    assert asked == [3, 4, 1, 2]
    with pytest.raises(IndexError):
        positions[5]
