"""The seam between the per-event stage and the ring stage: partitions' partials merge into one engine's result."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine import CONFIG, EVENTS, flags_of

from core import schema as s
from detector.engine import DetectionEngine, TickOutcome
from detector.partition import PartitionStage, TickPartials


def outcomes_of(outcomes: list[TickOutcome]) -> list[tuple[datetime, int, list[tuple[str, bool, str, bool, str]]]]:
    """What each tick changed, comparable across runs."""
    return [
        (
            o.tick,
            o.n_events,
            sorted((f.account_id, f.solo, f.ring_id or "", f.active, f.action) for f in o.changed),
        )
        for o in outcomes
    ]


def run_single(batches: list[pl.DataFrame]) -> tuple[DetectionEngine, list[TickOutcome]]:
    engine = DetectionEngine(CONFIG)
    outcomes = [o for b in batches for o in engine.ingest(b)]
    return engine, outcomes + engine.flush()


def run_partitioned(batches: list[pl.DataFrame], n: int) -> tuple[DetectionEngine, list[TickOutcome]]:
    """`n` partition stages (accounts split by hash, as Kafka keys requests) feeding one ring stage.

    The watermark is the latest event seen by any partition (what one engine uses for an ordered
    file); every partial crosses the seam as Arrow IPC bytes.
    """
    ring = DetectionEngine(CONFIG)
    stages = [PartitionStage(CONFIG) for _ in range(n)]
    outcomes: list[TickOutcome] = []
    watermark: datetime | None = None

    def run_round(pending: list[TickPartials]) -> None:
        by_tick: dict[datetime, list[TickPartials]] = defaultdict(list)
        for part in pending:
            by_tick[part.tick].append(TickPartials.from_ipc(part.to_ipc()))
        for tick in sorted(by_tick):
            outcomes.extend(ring.run([TickPartials.merge(by_tick[tick])]))
        if by_tick:
            for stage in stages:
                stage.advance(max(by_tick))

    for batch in batches:
        if batch.height:
            top = batch.get_column(s.TS).max()
            assert isinstance(top, datetime)
            watermark = top if watermark is None else max(watermark, top)
        owner = batch.get_column(s.ACCOUNT_ID).hash(seed=3) % n
        run_round(
            [p for i, stage in enumerate(stages) for p in stage.ingest(batch.filter(owner == i), watermark=watermark)]
        )
    run_round([p for stage in stages for p in stage.flush()])
    return ring, outcomes


def test_a_partials_message_round_trips() -> None:
    stage = PartitionStage(CONFIG)
    partials = stage.ingest(EVENTS.slice(0, 3000)) + stage.flush()
    assert partials
    for part in partials:
        back = TickPartials.from_ipc(part.to_ipc())
        assert back.tick == part.tick and back.n_events == part.n_events
        assert back.active.sort().equals(part.active.sort())
        for name in ("volume", "distinct", "templates", "keys", "texts", "prompts"):
            assert getattr(back, name).equals(getattr(part, name)), name


def test_partials_of_several_ticks_do_not_merge() -> None:
    stage = PartitionStage(CONFIG)
    partials = stage.ingest(EVENTS.slice(0, 3000)) + stage.flush()
    with pytest.raises(ValueError, match="several ticks"):
        TickPartials.merge(partials[:2])


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(min_value=1, max_value=EVENTS.height - 1), max_size=4, unique=True),
    st.integers(min_value=2, max_value=3),
)
def test_partitions_merged_decide_as_one_engine(cuts: list[int], n: int) -> None:
    bounds = [0, *sorted(cuts), EVENTS.height]
    batches = [EVENTS.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    one, one_outcomes = run_single(batches)
    split, split_outcomes = run_partitioned(batches, n)
    assert outcomes_of(split_outcomes) == outcomes_of(one_outcomes)
    assert flags_of(split) == flags_of(one)
    assert {k: (r.members, r.evidence) for k, r in split.rings.items()} == {
        k: (r.members, r.evidence) for k, r in one.rings.items()
    }
    # evidence quotes the same example prompts: a key's example is its earliest sampled prompt
    assert split.key_examples == one.key_examples
    assert split.volume_state.sort(s.ACCOUNT_ID).equals(one.volume_state.sort(s.ACCOUNT_ID))
    # the concerted phrase links' material: the same phrases and texts per account, the same holders
    assert phrases_of(split) == phrases_of(one)


def phrases_of(engine: DetectionEngine) -> tuple[set[tuple[str, int]], set[tuple[str, int]], list[int]]:
    """(account, phrase) and (account, text) pairs of the engine's phrase memory, and each phrase's holders."""
    idx = np.arange(len(engine.account_index), dtype=np.uint64)
    out = []
    for rows, key in (engine.phrases.phrases_of(idx), engine.phrases.texts_of(idx)):
        ids = engine.account_index.ids_of(rows).to_list()
        out.append(set(zip(ids, key.tolist(), strict=True)))
    keys = np.unique(engine.phrases.phrases_of(idx)[1])
    assert keys.size  # the scenario's harvesters have phrases to compare
    return out[0], out[1], engine.phrases.holders_of(keys).tolist()


def test_a_late_event_in_a_quiet_partition_goes_to_the_next_tick_to_run() -> None:
    """A partition with no events in the last tick still takes a late event after it: `advance`."""
    first = EVENTS.filter(pl.col(s.TS) < EVENTS.get_column(s.TS).min() + timedelta(hours=3))
    stage = PartitionStage(CONFIG)
    closed = stage.ingest(first.slice(0, 10)) + stage.flush()
    assert closed
    later = closed[-1].tick + timedelta(hours=2)
    stage.advance(later)
    late = first.slice(10, 1)
    assert late.get_column(s.TS).item() < later
    (part,) = stage.ingest(late, watermark=later + timedelta(hours=1))
    assert part.tick == later + timedelta(minutes=15)
