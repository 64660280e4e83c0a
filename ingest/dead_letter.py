"""Dead-letter sinks: where rejected records go, with their reasons, never silently dropped."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Protocol

import orjson
import polars as pl

from ingest.contract import RAW, REASON, SOURCE


class DeadLetterSink(Protocol):
    """Somewhere rejected records are written durably."""

    def write(self, rejected: pl.DataFrame) -> int: ...

    def close(self) -> None: ...


class FileDeadLetter:
    """Append rejected records as JSON lines {reason, source, raw} to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self.count = 0

    def write(self, rejected: pl.DataFrame) -> int:
        if rejected.height == 0:
            return 0
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("wb")
        out = bytearray()
        for reason, source, raw in rejected.select(REASON, SOURCE, RAW).iter_rows():
            out += orjson.dumps({"reason": reason, "source": source, "raw": raw})
            out += b"\n"
        self._fh.write(out)
        self._fh.flush()
        self.count += rejected.height
        return rejected.height

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
