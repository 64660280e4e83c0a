"""Tests for features/volume.py: several ticks reduced in one pass equal the ticks one at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import schema as s
from features import volume as v

START = datetime(2026, 5, 1, tzinfo=UTC)
TICK = "_tick"
EVERY = "15m"


def tagged_events(seed: int, *, n: int = 400, late: float = 0.1) -> pl.DataFrame:
    """Random events of a few accounts over two hours, each tagged with the tick that takes it.

    A `late` share of events is taken by a later tick than its own boundary, as a late arrival is.
    """
    rng = np.random.default_rng(seed)
    ts = [START + timedelta(seconds=float(x)) for x in np.sort(rng.uniform(0, 7200, n))]
    accounts = [f"a{i}" for i in rng.integers(0, 6, n)]
    boundary = [START + timedelta(minutes=15 * (1 + int((t - START).total_seconds() // 900))) for t in ts]
    tick = [b + timedelta(minutes=15 * int(rng.integers(1, 3))) if rng.random() < late else b for b in boundary]
    return pl.DataFrame(
        {
            s.EVENT_ID: [f"e{i}" for i in range(n)],
            s.TS: pl.Series(ts, dtype=s.TS_DTYPE),
            s.ACCOUNT_ID: accounts,
            s.IP: [f"10.0.{int(x)}.{int(y)}" for x, y in rng.integers(0, 4, (n, 2))],
            s.USER_AGENT: [f"ua{int(x)}" for x in rng.integers(0, 3, n)],
            s.MODEL: [f"m{int(x)}" for x in rng.integers(0, 2, n)],
            s.ENDPOINT: ["/v1/chat"] * n,
            s.STATUS: pl.Series(rng.choice([200, 200, 200, 429, 500], n), dtype=pl.Int64),
            s.PROMPT_TOKENS: pl.Series(rng.integers(5, 500, n), dtype=pl.Int64),
            s.COMPLETION_TOKENS: pl.Series(rng.integers(5, 900, n), dtype=pl.Int64),
            TICK: pl.Series(tick, dtype=s.TS_DTYPE),
        }
    )


def one_at_a_time(events: pl.DataFrame, state: pl.DataFrame) -> dict[datetime, pl.DataFrame]:
    """Each tick's partials computed from the state the earlier ticks left, as the engine used to."""
    out = {}
    for tick in events.get_column(TICK).unique().sort().to_list():
        part = events.filter(pl.col(TICK) == tick).drop(TICK).lazy()
        partials = v.volume_partials(part, state.lazy(), every=EVERY).collect()
        state = v.merge_volume_state(state.lazy(), partials.lazy()).collect()
        out[tick] = partials
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), late=st.sampled_from([0.0, 0.1, 0.4]), prior=st.booleans())
def test_volume_partials_of_many_ticks_equal_the_ticks_one_at_a_time(seed: int, late: float, prior: bool) -> None:
    events = tagged_events(seed, late=late)
    state = v.empty_volume_state().collect()
    if prior:
        # some accounts were seen before these ticks: their first gap is measured from that state
        earlier = tagged_events(seed + 1, n=30).with_columns(
            (pl.col(s.TS) - timedelta(hours=3)).alias(s.TS), pl.lit(None, dtype=s.TS_DTYPE).alias(TICK)
        )
        state = v.volume_partials(earlier.drop(TICK).lazy(), state.lazy(), every=EVERY).collect()
    expected = one_at_a_time(events, state)
    together = v.volume_partials(events.lazy(), state.lazy(), every=EVERY, group_by=TICK).collect()
    assert sorted(together.get_column(TICK).unique().to_list()) == sorted(expected)
    for tick, want in expected.items():
        got = together.filter(pl.col(TICK) == tick).drop(TICK)
        assert got.sort(s.ACCOUNT_ID).equals(want.sort(s.ACCOUNT_ID)), tick


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_distinct_partials_of_many_ticks_equal_the_ticks_one_at_a_time(seed: int) -> None:
    events = tagged_events(seed, late=0.2)
    together = v.distinct_partials(events.lazy(), group_by=TICK).collect()
    cols = list(v.DISTINCT_STATE_SCHEMA)
    for tick in events.get_column(TICK).unique().to_list():
        want = v.distinct_partials(events.filter(pl.col(TICK) == tick).drop(TICK).lazy()).collect()
        got = together.filter(pl.col(TICK) == tick).select(cols)
        assert got.sort(cols).equals(want.sort(cols))


def test_first_gap_of_a_tick_is_measured_from_the_latest_earlier_event() -> None:
    # a late event of tick 3 (ts inside tick 1's window) must not shorten tick 3's first gap below
    # what the latest earlier event gives: tick 2's event at 00:20
    ts = [START + timedelta(minutes=m) for m in (5, 20, 10, 35)]
    ticks = [START + timedelta(minutes=m) for m in (15, 30, 45, 45)]
    events = pl.DataFrame(
        {
            s.ACCOUNT_ID: ["a"] * 4,
            s.TS: pl.Series(ts, dtype=s.TS_DTYPE),
            s.STATUS: [200] * 4,
            s.PROMPT_TOKENS: [1] * 4,
            s.COMPLETION_TOKENS: [1] * 4,
            TICK: pl.Series(ticks, dtype=s.TS_DTYPE),
        }
    )
    got = v.volume_partials(events.lazy(), v.empty_volume_state(), every=EVERY, group_by=TICK).collect()
    third = got.filter(pl.col(TICK) == START + timedelta(minutes=45)).row(0, named=True)
    # gaps of tick 3 in its own ts order: 00:10 - 00:20 = -600 s, then 00:35 - 00:10 = 1500 s (deciseconds)
    assert third[v.N_GAPS] == 2
    assert third[v.GAP_SUM] == (-600 + 1500) * 10
