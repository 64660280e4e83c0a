"""Tests for features/synchrony.py: activity windows updated tick by tick equal a one-pass computation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from core import schema as s
from detector.state import ActivityWindows
from features import synchrony as sy

START = datetime(2026, 5, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
TICK = "_tick"


def ticked_events(seed: int, *, n: int, span_ticks: int) -> pl.DataFrame:
    """(account_id, _tick) of random events of a few accounts, over `span_ticks` ticks (more than a mask holds)."""
    rng = np.random.default_rng(seed)
    ticks = np.sort(rng.integers(1, span_ticks + 1, n))
    return pl.DataFrame(
        {
            s.ACCOUNT_ID: [f"a{i}" for i in rng.integers(0, 8, n)],
            TICK: pl.Series([START + STEP * int(t) for t in ticks], dtype=s.TS_DTYPE),
        }
    )


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), span=st.sampled_from([5, 40, 150]), n=st.integers(0, 200))
def test_windows_marked_tick_by_tick_equal_one_pass_over_all_events(seed: int, span: int, n: int) -> None:
    events = ticked_events(seed, n=n, span_ticks=span)
    ids = {f"a{i}": i for i in range(8)}
    windows = ActivityWindows()
    for (tick,), part in events.partition_by(TICK, as_dict=True, maintain_order=True).items():
        idx = np.array([ids[a] for a in part.get_column(s.ACCOUNT_ID).to_list()], dtype=np.int64)
        windows.mark(idx, sy.tick_number(tick, STEP))
    # read at the last tick and some ticks later (masks age while their accounts are idle)
    for later in (0, 3, 70):
        at = START + STEP * (span + later)
        want = dict(
            sy.active_windows(events.lazy(), at=at, step=STEP, tick=TICK)
            .collect()
            .select(s.ACCOUNT_ID, sy.ACTIVE_WINDOWS)
            .iter_rows()
        )
        got = windows.at(np.arange(8), sy.tick_number(at, STEP))
        assert {a: int(got[i]) for a, i in ids.items() if got[i]} == want


def test_a_mask_ages_out_after_window_ticks() -> None:
    w = np.array([1, 1 << 63, 0b101], dtype=np.uint64)
    assert sy.shift_windows(w, 1).tolist() == [2, 0, 0b1010]
    assert sy.shift_windows(w, np.array([63, 0, 64])).tolist() == [1 << 63, 1 << 63, 0]


def test_co_activity_counts_common_ticks_within_the_horizon() -> None:
    a = np.array([0b1011, 0b1], dtype=np.uint64)
    b = np.array([0b0011, 0b10], dtype=np.uint64)
    assert sy.co_active_ticks(a, b).tolist() == [2, 0]
    assert sy.co_active_ticks(sy.recent(a, 1), sy.recent(b, 1)).tolist() == [1, 0]
    assert sy.window_jaccard(a, b).tolist() == [2 / 3, 0.0]


def test_pair_synchrony_of_a_lockstep_group_and_of_strangers() -> None:
    assert sy.pair_synchrony(np.array([0b11, 0b11, 0b11], dtype=np.uint64)) == (1.0, 1.0)
    assert sy.pair_synchrony(np.array([0b1, 0b10, 0b100], dtype=np.uint64)) == (0.0, 0.0)
    # a sample of a large group's pairs, deterministic
    big = np.full(1000, 0b1, dtype=np.uint64)
    assert sy.pair_synchrony(big, max_pairs=500) == (1.0, 1.0)
