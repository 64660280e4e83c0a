"""Event files (NDJSON, NDJSON.gz, Parquet) read in batches, validated per the contract."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl

from core.errors import InputError
from ingest.contract import EVENTS, RecordKind, ValidatedBatch, decode_records, validate_frame

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class FileSource:
    """One input file and how to read it."""

    path: Path
    kind: RecordKind = EVENTS

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
        positions: list[str] = []
        with self._open() as fh:
            try:
                for lineno, line in enumerate(io.BufferedReader(fh, buffer_size=1 << 20), start=1):  # type: ignore[type-var]
                    stripped = line.rstrip(b"\r\n")
                    # blank lines separate nothing in NDJSON; they are not records
                    if not stripped.strip():
                        continue
                    lines.append(stripped)
                    positions.append(f"{name}:{lineno}")
                    if len(lines) >= batch_size:
                        yield decode_records(
                            lines, kind=self.kind, source=name, positions=positions, max_bytes=max_bytes
                        )
                        lines, positions = [], []
            except (OSError, EOFError) as exc:
                # a truncated gzip keeps what was read and reports the damage instead of crashing
                raise InputError(f"{name}: cannot read past line {len(positions)} of this batch: {exc}") from exc
        if lines:
            yield decode_records(lines, kind=self.kind, source=name, positions=positions, max_bytes=max_bytes)

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


def rejected_path_for(path: Path) -> Path:
    """The dead-letter file beside a replayed file: `events.jsonl.gz` -> `events.rejected.jsonl`."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return path.with_name(f"{name}.rejected.jsonl")
