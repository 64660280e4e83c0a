"""Event files (NDJSON, NDJSON.gz, Parquet) read in batches, validated per the contract."""

from __future__ import annotations

import gzip
import queue
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import polars as pl

from core.errors import InputError
from ingest.contract import EVENTS, LazyPositions, RecordKind, ValidatedBatch, decode_records, validate_frame

PARQUET_SUFFIXES = (".parquet", ".pq")
T = TypeVar("T")


@dataclass(frozen=True)
class FileSource:
    """One input file and how to read it."""

    path: Path
    kind: RecordKind = EVENTS
    # NDJSON is read in blocks of this many (decompressed) bytes and split into lines at C speed
    block_bytes: int = 1 << 22

    @property
    def is_parquet(self) -> bool:
        return self.path.suffix.lower() in PARQUET_SUFFIXES

    def batches(self, *, batch_size: int, max_bytes: int) -> Iterator[ValidatedBatch]:
        """Validated batches of at most `batch_size` records, in file order."""
        if not self.path.is_file():
            raise InputError(f"input file not found: {self.path}")
        if self.is_parquet:
            yield from self._parquet_batches(batch_size)
        else:
            yield from self._ndjson_batches(batch_size, max_bytes)

    def _open(self) -> IO[bytes]:
        with self.path.open("rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            return gzip.open(self.path, "rb")  # type: ignore[return-value]
        return self.path.open("rb")

    def _ndjson_batches(self, batch_size: int, max_bytes: int) -> Iterator[ValidatedBatch]:
        name = str(self.path)
        lines: list[bytes] = []
        numbers: list[np.ndarray] = []
        n_lines = 0  # lines of the file before the current block (blank ones included)
        carry = b""  # the block's last line, cut short by the block's end
        with self._open() as fh:
            while True:
                try:
                    block = fh.read(self.block_bytes)
                except (OSError, EOFError) as exc:
                    # a truncated gzip keeps what was read and reports the damage instead of crashing
                    raise InputError(f"{name}: cannot read past line {n_lines}: {exc}") from exc
                if block:
                    parts = (carry + block).split(b"\n")
                    carry = parts.pop()
                elif carry:
                    parts, carry = [carry], b""
                else:
                    break
                # C-level maps, not a Python loop per line: drop the CR of CRLF, skip blank lines
                parts = list(map(bytes.rstrip, parts, repeat(b"\r")))
                kept = np.fromiter(map(len, map(bytes.strip, parts)), dtype=np.int64, count=len(parts)) > 0
                lines.extend(compress(parts, kept))
                numbers.append(np.flatnonzero(kept) + (n_lines + 1))
                n_lines += len(parts)
                while len(lines) >= batch_size:
                    yield self._decode(lines[:batch_size], numbers, batch_size, max_bytes)
                    lines = lines[batch_size:]
        if lines:
            yield self._decode(lines, numbers, len(lines), max_bytes)

    def _decode(self, lines: list[bytes], numbers: list[np.ndarray], n: int, max_bytes: int) -> ValidatedBatch:
        """Decode the first `n` pending lines, taking their line numbers off the front of `numbers`."""
        pending = np.concatenate(numbers)
        numbers[:] = [pending[n:]]
        name, at = str(self.path), pending[:n]
        return decode_records(
            lines,
            kind=self.kind,
            source=str(self.path),
            positions=LazyPositions(n, lambda j: f"{name}:{int(at[j])}"),
            max_bytes=max_bytes,
        )

    def _parquet_batches(self, batch_size: int) -> Iterator[ValidatedBatch]:
        name = str(self.path)
        try:
            lf = pl.scan_parquet(self.path)
            total = lf.select(pl.len()).collect().item()
        except Exception as exc:  # polars raises several error types for damaged files
            raise InputError(f"{name}: not a readable Parquet file: {exc}") from exc
        for offset in range(0, total, batch_size):
            frame = lf.slice(offset, batch_size).collect()
            frame = frame.with_columns(
                (pl.lit(f"{name}#row") + (pl.int_range(pl.len()) + offset).cast(pl.String)).alias("source")
            )
            yield validate_frame(frame, kind=self.kind, source=name)


def prefetched(batches: Iterator[T], *, depth: int = 1) -> Generator[T, None, None]:
    """`batches`, read ahead by a thread: reading and decoding (gzip, Arrow, Polars: GIL released)
    overlap the caller's work on the previous batch. Errors are raised in the caller, in order."""
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for batch in batches:
                if not offer(("batch", batch)):
                    return
            offer(("end", None))
        except BaseException as exc:  # handed to the caller, who raises it
            offer(("error", exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=run, name="prefetch", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "batch":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        # the caller stopped early (or failed): the reader stops at its next hand-over
        stop.set()
        reader.join()


def rejected_path_for(path: Path) -> Path:
    """The dead-letter file beside a replayed file: `events.jsonl.gz` -> `events.rejected.jsonl`."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return path.with_name(f"{name}.rejected.jsonl")
