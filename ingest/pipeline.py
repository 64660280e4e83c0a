"""The one processing path shared by replay and streaming: validate -> detect -> persist."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from detector.engine import DetectionEngine, TickOutcome
from detector.partition import TickPartials
from detector.report import EventCounts, build_report
from detector.service import record_outcomes
from ingest.contract import ValidatedBatch
from ingest.dead_letter import DeadLetterSink

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What one batch did."""

    read: int
    accepted: int
    rejected: int
    ticks: int
    alerts_written: int
    seconds: float


@dataclass
class Pipeline:
    """Feeds validated batches to the detection engine and persists what it decides.

    Persistence happens inside `process_batch`, in one transaction per batch, before the caller
    acknowledges the batch (commits Kafka offsets, moves to the next file chunk).
    """

    engine: DetectionEngine
    sessions: sessionmaker[Session]
    archive_dir: Path | None = None
    counts: EventCounts = field(default_factory=EventCounts)
    batches: int = 0

    def process_batch(
        self,
        batch: ValidatedBatch,
        *,
        dead_letter: DeadLetterSink,
        watermark: datetime | None = None,
        partials: list[TickPartials] | None = None,
    ) -> BatchResult:
        """Dead-letter the rejects, run detection on the accepted, persist the outcome.

        `watermark`: event time up to which input is complete (see DetectionEngine.ingest).
        `partials`: the ticks the engine's partition stage already closed for this batch (replay
        runs that stage a batch ahead, in its reader thread); the ring stage runs them.
        """
        started = time.perf_counter()
        dead_letter.write(batch.rejected)
        duplicates_before = self.engine.duplicates
        if partials is None:
            outcomes = self.engine.ingest(batch.accepted, watermark=watermark)
        else:
            outcomes = self.engine.run(partials)
        written = self._persist(outcomes)
        if self.archive_dir is not None and batch.accepted.height:
            self._archive(batch.accepted)
        self.counts.read += batch.n_read
        self.counts.accepted += batch.accepted.height
        self.counts.rejected += batch.rejected.height
        # with partials computed ahead (replay's reader thread) a batch's delta may hold the next
        # batch's duplicates too; the deltas still add up to the partition stage's total
        self.counts.duplicates += self.engine.duplicates - duplicates_before
        self.batches += 1
        return BatchResult(
            read=batch.n_read,
            accepted=batch.accepted.height,
            rejected=batch.rejected.height,
            ticks=len(outcomes),
            alerts_written=written,
            seconds=time.perf_counter() - started,
        )

    def finish(self) -> int:
        """End of input: close the open ticks and persist them; returns alerts written."""
        return self._persist(self.engine.flush())

    def report(self) -> dict[str, object]:
        """The CONTRACT.md section 3 report of everything processed so far."""
        return build_report(self.engine, self.counts)

    def _persist(self, outcomes: list[TickOutcome]) -> int:
        if not any(o.changed or o.rings for o in outcomes):
            return 0
        with transaction(self.sessions) as session:
            return record_outcomes(outcomes, session=session)

    def _archive(self, accepted: pl.DataFrame) -> None:
        """Keep accepted events, unknown fields included (`extra`), as Parquet parts."""
        assert self.archive_dir is not None
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        accepted.write_parquet(self.archive_dir / f"part-{self.batches:06d}.parquet")
