"""The stream worker: a Kafka consumer-group member that runs the same pipeline as replay.

One loop, in the manner of quix-streams: poll a batch, decode and validate it per the contract,
run detection and persist (Pipeline.process_batch), publish changed decisions, flush the
producers, write the checkpoint, and only then commit offsets. As in replay, the two stages of
detection overlap: the newest polled batch goes through the partition stage (decode, dedupe,
tick partials) on a thread while the loop runs the ring stage of the batch before it, persists
and publishes. Detection state lives in memory, so the checkpoint (engine + next offset per
partition + counts, one atomic file per group) is what makes a restart after SIGKILL resume
exactly where the state stands: on assignment every partition is sought to the checkpoint's
offset, whatever Kafka had committed. Checkpoints are taken with the two stages level.

Account events (CONTRACT.md section 2) come from their own topic in the same group, as the stream
goes: the engine applies them in event time (a tick at T knows those with ts < T), and an
account-events partition that is behind holds the watermark back as a request partition does, so
a tick runs only once the account events before it are in, whatever order the fetches came in.

A database failure drops the batch ahead, rolls the state back to the last checkpoint, seeks back
to its offsets and retries with exponential back-off, committing nothing meanwhile. One worker per
group is assumed (the checkpoint holds the whole engine); running the partition stage in workers
of its own (TickPartials between them) is a later step.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import polars as pl
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core import schema as s
from core.db import make_engine, make_sessionmaker
from core.errors import InputError
from core.migrations import upgrade
from core.settings import Settings
from detector.engine import DetectionEngine, TickOutcome
from detector.partition import TickPartials
from detector.publisher import (
    DecisionPublisher,
    KafkaDecisionPublisher,
    NullDecisionPublisher,
    changed_decisions,
    tick_decisions,
)
from detector.report import EventCounts, write_report
from ingest.contract import ACCOUNT_EVENTS, EVENTS, LazyPositions, RecordKind, ValidatedBatch, decode_records
from ingest.kafka_io import KafkaDeadLetter, parse_position, position, producer_config, servers
from ingest.metrics import MetricsServer, StreamMetrics
from ingest.pipeline import Pipeline
from ingest.replay import detector_config, load_account_events

log = logging.getLogger(__name__)

# bumped when the checkpoint's layout changes; the engine's own state is checked field by field
# (3: offsets and event times keyed by (topic, partition), for the account-events topic)
CHECKPOINT_VERSION = 3
# a watermark before any event: buffers a batch without running a tick
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# a partition of one of the subscribed topics: (topic, partition number)
Part = tuple[str, int]


@dataclass
class ConsumeOptions:
    """What to consume and how (the `distillguard consume` options)."""

    topic: str = "api-requests"
    group: str = "distillguard"
    stop_at_end: bool = False
    report_path: Path | None = None
    accounts: Path | None = None
    # account events read as the stream goes (None: only the --accounts file, if any)
    accounts_topic: str | None = "account-events"
    dlq_topic: str | None = None
    decisions_topic: str | None = "account-decisions"
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    max_records: int | None = None
    poll_timeout_ms: int = 500
    # the checkpoint pickles the whole engine (tens of MB): once per interval, not per poll; offsets
    # are committed only with a checkpoint, so a crash replays at most this much input
    checkpoint_interval_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"

    @property
    def topics(self) -> list[str]:
        """The topics the worker subscribes to."""
        return [self.topic, *([self.accounts_topic] if self.accounts_topic else [])]


@dataclass
class ConsumeResult:
    """What a worker run did."""

    report: dict[str, Any]
    records: int
    seconds: float
    dead_letters: int
    decisions: int
    reached_end: bool
    resumed_from_checkpoint: bool


@dataclass
class _State:
    """Everything the checkpoint holds besides the engine, mutable between checkpoints."""

    offsets: dict[Part, int] = field(default_factory=dict)
    latest_ts: dict[Part, datetime] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)


@dataclass
class _Taken:
    """A polled batch taken into the state (offsets advanced), before its partition stage."""

    records: dict[Part, list[Any]]
    # assigned partitions not at their end when it was polled: they hold the watermark back
    open_partitions: list[Part]
    polled_at: float


@dataclass
class _Prepared:
    """A taken batch through the partition stage: validated, and the ticks it closed."""

    taken: _Taken
    batch: ValidatedBatch
    partials: list[TickPartials]
    # the batch's records from the account-events topic, validated
    accounts: ValidatedBatch | None = None


def checkpoint_path(settings: Settings, group: str) -> Path:
    """Where a group's checkpoint lives."""
    return settings.data_dir / "checkpoints" / f"{group}.pkl"


def write_atomic(path: Path, data: bytes) -> None:
    """Write-then-rename with fsync, so a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class StreamPipeline(Pipeline):
    """The replay pipeline, persisting once per Kafka batch however many ticks the batch ran.

    The outcomes of a batch's ticks are gathered, published tick by tick (each decision carries
    its own tick) and written in one transaction when the batch is done, as replay does.
    """

    pending: list[TickOutcome] = field(default_factory=list)

    def _persist(self, outcomes: list[TickOutcome]) -> int:
        self.pending.extend(outcomes)
        return 0

    def persist_pending(self) -> int:
        """Write the gathered outcomes (one transaction); returns alerts written."""
        outcomes, self.pending = self.pending, []
        return Pipeline._persist(self, outcomes)

    def drop_pending(self) -> None:
        """Forget gathered outcomes (the state they came from is being rolled back)."""
        self.pending = []


def _record_position(topic: str, partition: int, records: list[Any], j: int) -> str:
    """`topic/partition@offset` of the j-th record of a partition's polled records."""
    return position(topic, partition, records[j].offset)


class _Rebalance(AsyncConsumerRebalanceListener):
    """Commit what is checkpointed before partitions go; seek to the checkpoint when they come.

    Runs on kafka-python's IO thread while the worker's thread is blocked in poll(), so the worker's
    state is quiescent; async, because a blocking commit from the IO thread would deadlock.
    """

    def __init__(self, worker: StreamWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = self.worker.uncommitted(revoked)
        if not offsets:
            return
        try:
            await self.worker.consumer.commit_async(offsets)
            self.worker.mark_committed(offsets)
            log.info(
                "offsets committed on revoke",
                extra={"partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in offsets)},
            )
        except KafkaError as exc:
            # the checkpoint still holds these offsets: whoever resumes it seeks there
            log.warning("commit on revoke failed", extra={"error": repr(exc)})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.worker.on_assigned(assigned)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        log.warning(
            "partitions lost (evicted from the group)",
            extra={"partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in lost)},
        )


class StreamWorker:
    """A consume worker: build with settings and options, then `run()`."""

    def __init__(
        self,
        settings: Settings,
        options: ConsumeOptions,
        *,
        sessions: sessionmaker[Session] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.stop = stop or threading.Event()
        self.metrics = StreamMetrics()
        self.checkpoint_file = checkpoint_path(settings, options.group)
        self._sessions_override = sessions
        self._lock = threading.Lock()
        self._state = _State()
        self._committed: dict[Part, int] = {}
        self._checkpointed: dict[Part, int] = {}
        self._checkpointed_at = time.monotonic()
        self._snapshot: bytes | None = None
        self._assigned: set[TopicPartition] = set()
        self._batch_records: dict[Part, list[Any]] = {}
        self.consumer: KafkaConsumer
        self._ahead: ThreadPoolExecutor
        self.pipeline: StreamPipeline
        self.publisher: DecisionPublisher
        self.dead_letter: KafkaDeadLetter
        self.accounts_dead_letter: KafkaDeadLetter
        self._resumed = False
        self._first_record_at: float | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def run(self) -> ConsumeResult:
        """Consume until stopped (signal, `stop`) or, with stop_at_end, caught up; then report."""
        opts, settings = self.options, self.settings
        with ExitStack() as stack:
            stack.enter_context(self._signals())
            if self._sessions_override is None:
                self._upgrade_database()
                db = make_engine(settings.database_url)
                stack.callback(db.dispose)
                sessions = make_sessionmaker(db)
            else:
                sessions = self._sessions_override
            self.pipeline = StreamPipeline(engine=self._initial_engine(), sessions=sessions)
            self._restore_counts()
            bootstrap = servers(settings.kafka_bootstrap)
            producer = KafkaProducer(bootstrap_servers=bootstrap, **producer_config())
            stack.callback(producer.close)
            self.dead_letter = KafkaDeadLetter(producer, opts.dead_letter_topic, keys=self._key_of)
            self.accounts_dead_letter = KafkaDeadLetter(producer, f"{opts.accounts_topic}.dlq", keys=self._key_of)
            if opts.decisions_topic:
                self.publisher = KafkaDecisionPublisher(settings.kafka_bootstrap, topic=opts.decisions_topic)
            else:
                self.publisher = NullDecisionPublisher()
            stack.callback(self.publisher.close)
            if opts.metrics_port is not None:
                server = MetricsServer(self.metrics, host=opts.metrics_host, port=opts.metrics_port)
                self.metrics_port = server.port
                stack.callback(server.close)
            # the partition stage of the newest batch runs here while the loop runs the ring stage
            self._ahead = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="partition-stage"))
            self.consumer = self._make_consumer(bootstrap)
            # closing leaves the group at once (the revoke callback commits what is checkpointed)
            stack.callback(self.consumer.close, autocommit=False)
            self.consumer.subscribe(opts.topics, listener=_Rebalance(self))
            if self._snapshot is None:
                # a fresh state is the first thing to roll back to
                self._snapshot = self._serialize()
            reached_end = self._loop()
            if not reached_end and self._state.offsets != self._checkpointed:
                # stopped by a signal with batches processed since the last checkpoint
                self._save()
            doc = self.pipeline.report()
            if opts.report_path is not None:
                write_report(doc, opts.report_path)
            started = self._first_record_at or time.perf_counter()
            result = ConsumeResult(
                report=doc,
                records=self.metrics.records_read,
                seconds=time.perf_counter() - started,
                dead_letters=self.metrics.dead_letters,
                decisions=self.metrics.decisions_published,
                reached_end=reached_end,
                resumed_from_checkpoint=self._resumed,
            )
            log.info(
                "consumer stopped",
                extra={
                    "records": result.records,
                    "seconds": round(result.seconds, 3),
                    "reached_end": reached_end,
                    "dead_letters": result.dead_letters,
                    "decisions": result.decisions,
                    "flagged": len(self.pipeline.engine.flags),
                    **{f"{stage}_s": round(sec, 2) for stage, sec in self.metrics.stage_seconds.items()},
                },
            )
        return result

    def _upgrade_database(self) -> None:
        """Bring the schema to head, waiting with back-off while the database is unreachable."""
        delay = self.options.backoff_initial_s
        while True:
            try:
                upgrade(self.settings.database_url)
                return
            except SQLAlchemyError as exc:
                if self.stop.is_set():
                    raise
                log.warning(
                    "database unavailable at start; retrying",
                    extra={"error": type(exc).__name__, "retry_in_s": delay},
                )
                self.stop.wait(delay)
                delay = min(delay * 2, self.options.backoff_max_s)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT set the stop flag: the batch finishes and commits, then we leave."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: object) -> None:
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            self.stop.set()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _make_consumer(self, bootstrap: list[str]) -> KafkaConsumer:
        max_records = self.options.max_records or self.settings.batch_size
        return KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=self.options.group,
            client_id=f"distillguard-{self.options.group}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            # big fetches: per-request overhead, not bytes, is what costs in a Python client
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_min_bytes=1,
            fetch_max_wait_ms=100,
            # a batch can span many ticks (model refits): time before the group gives up on us
            max_poll_interval_ms=15 * 60 * 1000,
        )

    # --- checkpoint ----------------------------------------------------------------------
    def _initial_engine(self) -> DetectionEngine:
        doc = self._load_checkpoint()
        if doc is not None:
            self._resumed = True
            self._state = _State(
                offsets=dict(doc["offsets"]),
                latest_ts=dict(doc["latest_ts"]),
                published=dict(doc["published"]),
            )
            self._checkpointed = dict(doc["offsets"])
            self._loaded_counts: EventCounts | None = doc["counts"]
            log.info(
                "resuming from checkpoint",
                extra={
                    "file": str(self.checkpoint_file),
                    "offsets": doc["offsets"],
                    "read": doc["counts"].read,
                },
            )
            return doc["engine"]
        self._loaded_counts = None
        engine = DetectionEngine(detector_config(self.settings))
        if self.options.accounts is not None:
            acc, rejected_path, n_bad = load_account_events(self.options.accounts, settings=self.settings)
            if acc.height:
                engine.add_account_events(acc)
            log.info(
                "account events loaded",
                extra={
                    "accepted": acc.height,
                    "rejected": n_bad,
                    "rejected_file": str(rejected_path),
                },
            )
        return engine

    def _restore_counts(self) -> None:
        if self._loaded_counts is not None:
            self.pipeline.counts = self._loaded_counts

    def _load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_file.is_file():
            return None
        data = self.checkpoint_file.read_bytes()
        doc = pickle.loads(data)
        # what a failure before the next checkpoint rolls back to
        self._snapshot = data
        if doc.get("version") != CHECKPOINT_VERSION:
            raise InputError(
                f"{self.checkpoint_file}: checkpoint version {doc.get('version')} is not {CHECKPOINT_VERSION}"
            )
        fields = sorted(vars(DetectionEngine(detector_config(self.settings))))
        if doc.get("engine_fields") != fields:
            # an engine of another version pickled other state: resuming it would fail mid-stream
            raise InputError(
                f"{self.checkpoint_file}: checkpoint holds detector state of another version "
                f"(fields {doc.get('engine_fields')}); replay the history into a new --group instead"
            )
        if doc.get("topic") != self.options.topic:
            raise InputError(
                f"{self.checkpoint_file}: checkpoint of group {self.options.group!r} is for topic "
                f"{doc.get('topic')!r}, not {self.options.topic!r}; use another --group"
            )
        return doc

    def _serialize(self) -> bytes:
        doc = {
            "version": CHECKPOINT_VERSION,
            "topic": self.options.topic,
            "group": self.options.group,
            "engine": self.pipeline.engine,
            "engine_fields": sorted(vars(self.pipeline.engine)),
            "counts": self.pipeline.counts,
            "offsets": dict(self._state.offsets),
            "latest_ts": dict(self._state.latest_ts),
            "published": dict(self._state.published),
            "saved_at": datetime.now(UTC),
        }
        return pickle.dumps(doc, protocol=pickle.HIGHEST_PROTOCOL)

    def _checkpoint(self) -> None:
        started = time.perf_counter()
        data = self._serialize()
        write_atomic(self.checkpoint_file, data)
        self._snapshot = data
        self._checkpointed_at = time.monotonic()
        with self._lock:
            self._checkpointed = dict(self._state.offsets)
        log.debug(
            "checkpoint written",
            extra={"bytes": len(data), "seconds": round(time.perf_counter() - started, 3)},
        )

    def _rollback(self) -> None:
        """Back to the last checkpoint: state, counts and positions (the batch is polled again)."""
        assert self._snapshot is not None
        doc = pickle.loads(self._snapshot)
        self.pipeline.drop_pending()
        self.pipeline.engine = doc["engine"]
        self.pipeline.counts = doc["counts"]
        with self._lock:
            self._state = _State(
                offsets=dict(doc["offsets"]),
                latest_ts=dict(doc["latest_ts"]),
                published=dict(doc["published"]),
            )
            assigned = set(self._assigned)
        for tp in assigned:
            offset = self._state.offsets.get((tp.topic, tp.partition))
            if offset is None:
                # nothing processed from it yet: start over from where the group stands
                offset = self.consumer.committed(tp)
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)

    # --- rebalance hooks (IO thread) -------------------------------------------------------
    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Seek newly assigned partitions to where the in-memory state stands, so state and input agree."""
        # at a poll the state is the last checkpoint plus the batches processed since (exactly the
        # checkpoint at start or after a rollback): its offsets, not Kafka's committed ones, say
        # where its next record is
        with self._lock:
            self._assigned = set(self.consumer.assignment())
            for tp in assigned:
                offset = self._state.offsets.get((tp.topic, tp.partition))
                if offset is not None:
                    self.consumer.seek(tp, offset)
            sought = {f"{topic}/{p}": self._state.offsets.get((topic, p)) for topic, p in _parts(assigned)}
        log.info("partitions assigned", extra={"partitions": sorted(sought), "state_offsets": sought})

    def uncommitted(self, partitions: set[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """Checkpointed offsets of `partitions` not yet committed."""
        with self._lock:
            return {
                tp: OffsetAndMetadata(self._checkpointed[(tp.topic, tp.partition)], "", -1)
                for tp in partitions
                if (tp.topic, tp.partition) in self._checkpointed
                and self._committed.get((tp.topic, tp.partition)) != self._checkpointed[(tp.topic, tp.partition)]
            }

    def mark_committed(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Remember what Kafka now holds."""
        with self._lock:
            for tp, om in offsets.items():
                self._committed[(tp.topic, tp.partition)] = om.offset

    # --- the loop ----------------------------------------------------------------------------
    def _loop(self) -> bool:
        """Poll and process until stopped; True when stopped because the group caught up.

        The newest polled batch goes through the partition stage (decode, dedupe, tick partials)
        on the `ahead` thread while this thread runs the ring stage of the one before, persists
        and publishes it: the two stages overlap as in replay. Checkpoints are taken only when the
        stages are level (nothing ahead): a checkpoint of a partition stage that had taken a batch
        the ring stage had not would, after a rollback, dedupe that batch away when it is polled
        again.
        """
        opts = self.options
        max_records = opts.max_records or self.settings.batch_size
        delay = opts.backoff_initial_s
        ahead: deque[Future[_Prepared]] = deque()
        try:
            while not self.stop.is_set():
                polled_at = time.perf_counter()
                records = self.consumer.poll(timeout_ms=opts.poll_timeout_ms, max_records=max_records)
                try:
                    taken = self._take(records, polled_at) if records else None
                    if taken is not None:
                        if self._first_record_at is None:
                            self._first_record_at = polled_at
                        ahead.append(self._ahead.submit(self._prepare, taken))
                    # the ring stage runs every batch but the newest, whose partition stage runs
                    # meanwhile; when the poll brought nothing, the newest too
                    while len(ahead) > (1 if taken is not None else 0):
                        self._complete(self._result(ahead.popleft()))
                    self._update_lag()
                    if opts.stop_at_end and self._caught_up():
                        self._drain(ahead)
                        self._finish()
                        return True
                    if time.monotonic() - self._checkpointed_at >= opts.checkpoint_interval_s:
                        self._drain(ahead)
                        self._save()
                    delay = opts.backoff_initial_s
                except SQLAlchemyError as exc:
                    self._failed(exc, ahead, delay)
                    delay = min(delay * 2, opts.backoff_max_s)
            # stopped: finish what the partition stage has taken, so the stages are level
            try:
                self._drain(ahead)
            except SQLAlchemyError as exc:
                self._failed(exc, ahead, 0.0)
            return False
        finally:
            # an error unwinding the loop: nothing may still run on the state
            self._discard(ahead)

    def _failed(self, exc: SQLAlchemyError, ahead: deque[Future[_Prepared]], delay: float) -> None:
        """Persistence failed: back to the last checkpoint (batches ahead dropped), wait `delay`."""
        self.metrics.add(db_failures=1)
        log.warning(
            "persistence failed: rolling back to the last checkpoint, not committing",
            extra={
                "error": type(exc).__name__,
                "detail": str(exc).splitlines()[0][:200],
                "retry_in_s": delay,
            },
        )
        self._discard(ahead)
        self._rollback()
        if delay > 0:
            self._wait(delay)

    def _drain(self, ahead: deque[Future[_Prepared]]) -> None:
        """Run the ring stage of every batch ahead: the two stages level."""
        while ahead:
            self._complete(self._result(ahead.popleft()))

    def _result(self, fut: Future[_Prepared]) -> _Prepared:
        """A batch's partition stage, waited for."""
        started = time.perf_counter()
        prepared = fut.result()
        self.metrics.add_stage_seconds("waiting_for_partition", time.perf_counter() - started)
        return prepared

    @staticmethod
    def _discard(ahead: deque[Future[_Prepared]]) -> None:
        """Drop the batches ahead once their partition stage is done (the state they changed is rolled back)."""
        while ahead:
            fut = ahead.popleft()
            if not fut.cancel():
                wait([fut])

    def _wait(self, seconds: float) -> None:
        """Back off without leaving the group: partitions paused, poll keeps membership alive."""
        assigned = list(self.consumer.assignment())
        self.consumer.pause(*assigned)
        try:
            deadline = time.monotonic() + seconds
            while not self.stop.is_set() and time.monotonic() < deadline:
                got = self.consumer.poll(timeout_ms=min(200, max(1, int((deadline - time.monotonic()) * 1000))))
                if got:
                    # paused partitions return nothing; anything else is from a new assignment,
                    # which on_assigned has sought to the state: read it again after the pause
                    for tp in got:
                        offset = self._state.offsets.get((tp.topic, tp.partition))
                        if offset is not None:
                            self.consumer.seek(tp, offset)
        finally:
            self.consumer.resume(*[tp for tp in assigned if tp in self.consumer.assignment()])

    def _take(self, records: dict[TopicPartition, list[Any]], polled_at: float) -> _Taken | None:
        """A polled batch taken into the state: its records (minus those the state holds) and offsets."""
        taken: dict[Part, list[Any]] = {}
        next_offsets: dict[Part, int] = {}
        for tp, recs in records.items():
            part = (tp.topic, tp.partition)
            # records the state already holds (a fetch that raced a seek) are not processed twice
            done = self._state.offsets.get(part)
            if done is not None and recs and recs[0].offset < done:
                recs = [r for r in recs if r.offset >= done]
            if not recs:
                continue
            taken[part] = recs
            next_offsets[part] = recs[-1].offset + 1
        if not taken:
            return None
        with self._lock:
            self._state.offsets.update(next_offsets)
        # which partitions hold the watermark back, as of this batch (the consumer is this thread's)
        open_partitions = sorted((tp.topic, tp.partition) for tp in self._assigned_now() if not self._at_end(tp))
        return _Taken(records=taken, open_partitions=open_partitions, polled_at=polled_at)

    def _prepare(self, taken: _Taken) -> _Prepared:
        """The partition stage of a taken batch (on the `ahead` thread): decode, validate, tick partials."""
        started = time.perf_counter()
        requests: list[ValidatedBatch] = []
        accounts: list[ValidatedBatch] = []
        for (topic, p), recs in taken.records.items():
            is_accounts = topic == self.options.accounts_topic
            values = [r.value if r.value is not None else b"" for r in recs]
            batch = decode_records(
                values,
                kind=ACCOUNT_EVENTS if is_accounts else EVENTS,
                source=f"{topic}/{p}",
                positions=LazyPositions(len(recs), functools.partial(_record_position, topic, p, recs)),
                max_bytes=self.settings.max_record_bytes,
            )
            (accounts if is_accounts else requests).append(batch)
            if batch.accepted.height:
                ts = cast(datetime, batch.accepted.get_column(s.TS).max())
                prev = self._state.latest_ts.get((topic, p))
                self._state.latest_ts[(topic, p)] = ts if prev is None else max(prev, ts)
        merged = _merged(requests, EVENTS)
        partials = self.pipeline.engine.partition.ingest(merged.accepted, watermark=self._watermark(taken))
        self.metrics.add_stage_seconds("partition", time.perf_counter() - started)
        return _Prepared(taken=taken, batch=merged, partials=partials, accounts=_merged(accounts, ACCOUNT_EVENTS))

    def _complete(self, prepared: _Prepared) -> None:
        """The ring stage of a prepared batch: detect, dead-letter, publish, persist."""
        merged = prepared.batch
        self._batch_records = prepared.taken.records
        flags_before = len(self.pipeline.engine.flags)
        duplicates_before = self.pipeline.counts.duplicates
        dead_before = self.dead_letter.count
        started = time.perf_counter()
        if prepared.accounts is not None:
            # before the batch's ticks: those the watermark let close may need them
            self.accounts_dead_letter.write(prepared.accounts.rejected)
            if prepared.accounts.accepted.height:
                self.pipeline.engine.add_account_events(prepared.accounts.accepted)
            self.metrics.add(
                account_events=prepared.accounts.accepted.height,
                dead_letters=prepared.accounts.rejected.height,
            )
        written = self._process(merged, prepared.partials)
        self.metrics.add_stage_seconds("ring", time.perf_counter() - started)
        self.metrics.observe_batch(
            read=merged.n_read,
            accepted=merged.accepted.height,
            rejected=merged.rejected.height,
            seconds=time.perf_counter() - prepared.taken.polled_at,
        )
        self.metrics.add(
            dead_letters=self.dead_letter.count - dead_before,
            duplicates=self.pipeline.counts.duplicates - duplicates_before,
            alerts_written=written,
            alerts_raised=len(self.pipeline.engine.flags) - flags_before,
        )
        log.debug(
            "batch done",
            extra={
                "records": merged.n_read,
                "rejected": merged.rejected.height,
                "seconds": round(time.perf_counter() - prepared.taken.polled_at, 3),
            },
        )

    def _process(self, batch: ValidatedBatch, partials: list[TickPartials]) -> int:
        """Run the ticks the batch closed, publish each tick's decisions, persist."""
        done = len(self.pipeline.pending)
        self.pipeline.process_batch(batch, dead_letter=self.dead_letter, partials=partials)
        self._publish_ticks(self.pipeline.pending[done:])
        return self.pipeline.persist_pending()

    def _publish_ticks(self, outcomes: list[TickOutcome]) -> None:
        """Publish the actions each tick changed, decided at that tick."""
        decisions = tick_decisions(outcomes, self._state.published)
        if decisions:
            self.publisher.publish(decisions)
            self.metrics.add(decisions_published=len(decisions))

    def _finish(self) -> None:
        """End of input: run the remaining ticks, persist, publish, checkpoint and commit."""
        engine = self.pipeline.engine
        done = len(self.pipeline.pending)
        self.pipeline.finish()
        self._publish_ticks(self.pipeline.pending[done:])
        written = self.pipeline.persist_pending()
        self.metrics.add(alerts_written=written)
        # any flag whose action still differs from what was published (none expected)
        if engine.last_tick is not None:
            self._publish(decided_at=engine.last_tick)
        self._save()

    def _save(self) -> None:
        """Make what is processed durable: outputs flushed, then the checkpoint, then the commit."""
        self.dead_letter.flush()
        self.accounts_dead_letter.flush()
        self.publisher.flush()
        self._checkpoint()
        self._commit()

    def _publish(self, *, decided_at: datetime) -> None:
        decisions = changed_decisions(self.pipeline.engine.flags, self._state.published, decided_at=decided_at)
        if decisions:
            self.publisher.publish(decisions)
            self.metrics.add(decisions_published=len(decisions))

    def _watermark(self, taken: _Taken) -> datetime | None:
        """Event time up to which every assigned partition is complete (None: all at their end)."""
        # the minimum over partitions of each one's latest event: a partition at its end does not
        # hold it back, one that has delivered nothing yet holds it at EPOCH
        mark: datetime | None = None
        for p in taken.open_partitions:
            ts = self._state.latest_ts.get(p)
            if ts is None:
                return EPOCH
            mark = ts if mark is None else min(mark, ts)
        return mark

    def _assigned_now(self) -> set[TopicPartition]:
        return set(self.consumer.assignment())

    def _position(self, tp: TopicPartition) -> int | None:
        known = self._state.offsets.get((tp.topic, tp.partition))
        if known is not None:
            return known
        try:
            return self.consumer.position(tp, timeout_ms=0)
        except KafkaError:
            return None

    def _at_end(self, tp: TopicPartition) -> bool:
        high = self.consumer.highwater(tp)
        if high is None:
            return False
        pos = self._position(tp)
        return pos is not None and pos >= high

    def _caught_up(self) -> bool:
        assigned = self._assigned_now()
        if not assigned or not all(self._at_end(tp) for tp in assigned):
            return False
        # the cached highwater may be stale: ask the broker before calling it the end
        ends = self.consumer.end_offsets(list(assigned))
        return all((self._position(tp) or 0) >= end for tp, end in ends.items())

    def _update_lag(self) -> None:
        lag = {}
        for tp in self._assigned_now():
            high = self.consumer.highwater(tp)
            pos = self._position(tp)
            if high is not None and pos is not None:
                lag[(tp.topic, tp.partition)] = max(high - pos, 0)
        self.metrics.set_lag(lag)

    def _commit(self) -> None:
        offsets = self.uncommitted(set(self.consumer.assignment()))
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            # the checkpoint holds the offsets: a rebalance or restart seeks there anyway
            log.warning("offset commit failed; will retry with the next batch", extra={"error": repr(exc)})
            return
        self.mark_committed(offsets)
        self.metrics.add(commits=1)

    def _key_of(self, source: str) -> bytes | None:
        """The original key of a rejected record, found by its position."""
        where = parse_position(source)
        if where is None:
            return None
        recs = self._batch_records.get((where[0], where[1]), [])
        offset = where[2]
        if recs:
            i = offset - recs[0].offset
            if 0 <= i < len(recs) and recs[i].offset == offset:
                return recs[i].key
        return next((r.key for r in recs if r.offset == offset), None)


def _parts(partitions: set[TopicPartition]) -> list[Part]:
    """(topic, partition) of each of `partitions`."""
    return [(tp.topic, tp.partition) for tp in partitions]


def _merged(batches: list[ValidatedBatch], kind: RecordKind) -> ValidatedBatch:
    """One validated batch of several partitions' (an empty one of `kind` for none)."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        return decode_records([], kind=kind, source="")
    return ValidatedBatch(
        accepted=pl.concat([b.accepted for b in batches]),
        rejected=pl.concat([b.rejected for b in batches]),
    )


def consume(
    settings: Settings,
    options: ConsumeOptions,
    *,
    sessions: sessionmaker[Session] | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[StreamWorker], None] | None = None,
) -> ConsumeResult:
    """Run one consume worker to completion (see StreamWorker)."""
    worker = StreamWorker(settings, options, sessions=sessions, stop=stop)
    if on_ready is not None:
        on_ready(worker)
    return worker.run()
