"""Replay of event files through the same pipeline as streaming."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from core.db import make_engine, make_sessionmaker
from core.errors import InputError
from core.migrations import upgrade
from core.settings import Settings
from detector.engine import DetectionEngine, DetectorConfig
from detector.partition import TickPartials
from detector.report import write_report
from ingest.contract import ACCOUNT_EVENTS, ValidatedBatch
from ingest.dead_letter import FileDeadLetter
from ingest.pipeline import Pipeline
from ingest.sources import FileSource, prefetched, rejected_path_for

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def detector_config(settings: Settings) -> DetectorConfig:
    """The detector's slice of the settings."""
    return DetectorConfig(
        every=settings.tick_every,
        min_account_events=settings.min_account_events,
        contamination=settings.contamination,
        flag_threshold=settings.flag_threshold,
        random_state=settings.random_state,
        public_text_senders=settings.public_text_senders,
        public_texts=settings.public_texts,
        model_path=settings.data_dir / "models" / "account_ensemble.pkl",
    )


@dataclass
class ReplayResult:
    """The report document and where rejected records went."""

    report: dict[str, Any]
    rejected_files: list[Path]
    account_events: int


def load_account_events(path: Path, *, settings: Settings) -> tuple[pl.DataFrame, Path, int]:
    """Validate an account-events file; rejects go beside it. Returns (accepted, rejected path, rejected)."""
    source = FileSource(path, kind=ACCOUNT_EVENTS)
    sink = FileDeadLetter(rejected_path_for(path))
    frames = []
    try:
        for batch in source.batches(batch_size=settings.batch_size, max_bytes=settings.max_record_bytes):
            sink.write(batch.rejected)
            frames.append(batch.accepted)
    finally:
        sink.close()
    accepted = pl.concat(frames) if frames else pl.DataFrame()
    return accepted, sink.path, sink.count


def _first_ts(source: FileSource, settings: Settings) -> Any:
    """Event time of a file's first valid record, to order overlapping files (None if none)."""
    for batch in source.batches(batch_size=min(1000, settings.batch_size), max_bytes=settings.max_record_bytes):
        if batch.accepted.height:
            return batch.accepted.get_column("ts").min()
    return None


def _with_partials(
    source: FileSource, detection: DetectionEngine, settings: Settings
) -> Iterator[tuple[ValidatedBatch, list[TickPartials]]]:
    """Each batch of `source` with the ticks it closes in the engine's partition stage."""
    for batch in source.batches(batch_size=settings.batch_size, max_bytes=settings.max_record_bytes):
        yield batch, detection.partition.ingest(batch.accepted)


def replay(
    files: Sequence[Path],
    *,
    settings: Settings,
    accounts: Path | None = None,
    report_path: Path | None = None,
    archive_dir: Path | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay files in event-time order, persist alerts, write the report; returns the report."""
    if not files:
        raise InputError("no input files given")
    for f in files:
        if not f.is_file():
            raise InputError(f"input file not found: {f}")
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        detection = DetectionEngine(detector_config(settings))
        n_account_events = 0
        if accounts is not None:
            acc, acc_rejected, n_bad = load_account_events(accounts, settings=settings)
            n_account_events = acc.height
            if acc.height:
                detection.add_account_events(acc)
            log.info(
                "account events loaded",
                extra={"accepted": acc.height, "rejected": n_bad, "rejected_file": str(acc_rejected)},
            )
        pipeline = Pipeline(engine=detection, sessions=make_sessionmaker(engine), archive_dir=archive_dir)
        sources = [FileSource(f) for f in files]
        if len(sources) > 1:
            # files are processed one after another; ordering them by their first event keeps the
            # stream in event-time order when they are consecutive slices of one log
            firsts = {id(src): _first_ts(src, settings) for src in sources}
            sources.sort(key=lambda src: (firsts[id(src)] is None, firsts[id(src)] or 0))
        rejected_files = []
        for src in sources:
            sink = FileDeadLetter(rejected_path_for(src.path))
            try:
                # the next batch is read, decoded and reduced to tick partials (the per-event stage)
                # in the reader thread while the ring stage runs this one's ticks and persists them
                with closing(prefetched(_with_partials(src, detection, settings))) as ahead:
                    for batch, partials in ahead:
                        result = pipeline.process_batch(batch, dead_letter=sink, partials=partials)
                        if progress is not None:
                            progress(result.read)
            finally:
                sink.close()
            if sink.count:
                rejected_files.append(sink.path)
                log.warning("rejected records written", extra={"file": str(sink.path), "count": sink.count})
        pipeline.finish()
        doc = pipeline.report()
        if report_path is not None:
            write_report(doc, report_path)
        return ReplayResult(report=doc, rejected_files=rejected_files, account_events=n_account_events)
    finally:
        engine.dispose()
