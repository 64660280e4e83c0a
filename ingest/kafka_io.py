"""Kafka plumbing of the stream path: client settings, the dead-letter topic, loading files."""

from __future__ import annotations

import gzip
import io
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from core.errors import InputError
from ingest.contract import RAW, REASON, SOURCE
from ingest.sources import PARQUET_SUFFIXES

log = logging.getLogger(__name__)

# `topic/partition@offset`, the position decode_records carries into a rejected record's source
_POSITION = re.compile(r"^(?P<topic>.+)/(?P<partition>\d+)@(?P<offset>\d+)$")


def servers(bootstrap: str) -> list[str]:
    """`host:port,host:port` as kafka-python wants it."""
    return [s.strip() for s in bootstrap.split(",") if s.strip()]


def producer_config(**overrides: Any) -> dict[str, Any]:
    """Throughput-minded producer settings: large batches, a short linger, acks from all."""
    config: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 20,
        "batch_size": 512 * 1024,
        "max_request_size": 8 * 1024 * 1024,
        "retries": 10,
    }
    config.update(overrides)
    return config


def position(topic: str, partition: int, offset: int) -> str:
    """Where a record came from, as dead-letter `source` and log field."""
    return f"{topic}/{partition}@{offset}"


def parse_position(source: str) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of a `position()` string, None for anything else."""
    m = _POSITION.match(source)
    return (m["topic"], int(m["partition"]), int(m["offset"])) if m else None


class KafkaDeadLetter:
    """DeadLetterSink producing rejected records to a topic as JSON {reason, source, raw}.

    The message key is the original record's key, so a rejected record lands in the dead-letter
    partition of its account. Records are only buffered by `write`; `flush` (called before offsets
    are committed) makes them durable. A record already sent by this process (a batch retried after
    a database failure) is not sent again.
    """

    def __init__(self, producer: Any, topic: str, keys: Callable[[str], bytes | None] | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.keys = keys
        self.count = 0
        self._sent_upto: dict[tuple[str, int], int] = {}

    def write(self, rejected: pl.DataFrame) -> int:
        if rejected.height == 0:
            return 0
        sent = 0
        # rejects come grouped by reason, not in offset order: compare with what earlier writes sent
        before = dict(self._sent_upto)
        for reason, source, raw in rejected.select(REASON, SOURCE, RAW).iter_rows():
            where = parse_position(source)
            if where is not None:
                tp, offset = (where[0], where[1]), where[2]
                if offset < before.get(tp, 0):
                    continue
                self._sent_upto[tp] = max(self._sent_upto.get(tp, 0), offset + 1)
            key = self.keys(source) if self.keys is not None else None
            value = orjson.dumps({"reason": reason, "source": source, "raw": raw})
            self.producer.send(self.topic, key=key, value=value)
            sent += 1
        self.count += sent
        return sent

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.flush()


# --- loading files into a topic ---------------------------------------------------------


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _ndjson_lines(path: Path) -> Iterator[bytes]:
    with _open(path) as fh:
        for line in io.BufferedReader(fh, buffer_size=1 << 20):  # type: ignore[type-var]
            stripped = line.rstrip(b"\r\n")
            if stripped.strip():
                yield stripped


def _parquet_lines(path: Path, chunk: int = 20_000) -> Iterator[bytes]:
    try:
        lf = pl.scan_parquet(path)
        total = lf.select(pl.len()).collect().item()
    except Exception as exc:  # polars raises several error types for damaged files
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from exc
    for offset in range(0, total, chunk):
        frame = lf.slice(offset, chunk).collect()
        # timestamps as RFC 3339 with a Z, the contract's form; JSON writers would pick another
        frame = frame.with_columns(
            pl.col(c).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            if frame.schema[c].time_zone  # type: ignore[attr-defined]
            else pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            for c, dt in frame.schema.items()
            if isinstance(dt, pl.Datetime)
        )
        yield from frame.write_ndjson().encode().splitlines()


def file_lines(path: Path) -> Iterator[bytes]:
    """Records of an NDJSON(.gz) file as they are, or Parquet rows as JSON lines."""
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _parquet_lines(path)
    return _ndjson_lines(path)


def key_of(line: bytes, field: str | None) -> bytes | None:
    """The value of `field` when the line is a JSON object with it as a string, else None."""
    if field is None:
        return None
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    value = obj.get(field) if isinstance(obj, dict) else None
    return value.encode() if isinstance(value, str) else None


def produce_files(
    files: Sequence[Path],
    *,
    producer: Any,
    topic: str,
    key_field: str | None = "account_id",
    progress: Callable[[int], None] | None = None,
    every: int = 5_000,
) -> int:
    """Send every record of `files` unchanged to `topic`; returns the count.

    The key is the record's `key_field` when it parses, else none.

    Malformed lines go through as they are, so the consumer's dead-letter path sees them.
    """
    for f in files:
        if not f.is_file():
            raise InputError(f"input file not found: {f}")
    n = 0
    pending = 0
    send = producer.send
    for f in files:
        for line in file_lines(f):
            send(topic, value=line, key=key_of(line, key_field))
            n += 1
            pending += 1
            if pending >= every:
                if progress is not None:
                    progress(pending)
                pending = 0
    producer.flush()
    if progress is not None and pending:
        progress(pending)
    log.info("records produced", extra={"topic": topic, "records": n, "files": len(files)})
    return n
