"""Tests for features/clusters.py: prompt samples and wrapper-key counts over several ticks in one pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from core import schema as s
from features import clusters as cl
from features import prompts as pr

START = datetime(2026, 5, 1, tzinfo=UTC)
TICK = "_tick"
WRAPPERS = ("Think step by step and show your reasoning: {q}", "Write a Python function that {q}", "{q}")
QUESTIONS = ("sorts a list of pairs", "adds two numbers", "reverses the words of a sentence", "counts vowels")


def events(seed: int, n: int = 300) -> pl.DataFrame:
    """Prompts of a few accounts over several ticks, with repeats (retries) and shared wrappers."""
    rng = np.random.default_rng(seed)
    prompts = [WRAPPERS[int(w)].format(q=QUESTIONS[int(q)]) for w, q in rng.integers(0, 3, (n, 2)) % [3, 4]]
    return pl.DataFrame(
        {
            s.EVENT_ID: [f"e{seed}-{i}" for i in range(n)],
            s.ACCOUNT_ID: [f"a{int(x)}" for x in rng.integers(0, 5, n)],
            s.PROMPT: [None if rng.random() < 0.05 else p for p in prompts],
            TICK: pl.Series([START + timedelta(minutes=15 * int(t)) for t in rng.integers(1, 6, n)], dtype=s.TS_DTYPE),
        }
    )


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), per_account=st.integers(1, 8))
def test_sample_by_account_and_tick_equals_each_tick_sampled_alone(seed: int, per_account: int) -> None:
    ev = events(seed)
    together = cl.prompt_sample(ev.lazy(), per_account=per_account, group_by=[s.ACCOUNT_ID, TICK]).collect()
    for tick in ev.get_column(TICK).unique().to_list():
        alone = cl.prompt_sample(ev.filter(pl.col(TICK) == tick).lazy(), per_account=per_account).collect()
        got = together.filter(pl.col(TICK) == tick)
        assert sorted(got.get_column(s.EVENT_ID).to_list()) == sorted(alone.get_column(s.EVENT_ID).to_list())
    assert together.group_by(s.ACCOUNT_ID, TICK).len().get_column("len").max() <= per_account  # type: ignore[operator]


def test_key_counts_by_account_and_tick_sum_to_the_counts_by_account() -> None:
    fp = pr.prompt_fingerprints(events(3).lazy(), keys=True, wrapper_keys_only=True)
    by_tick = cl.template_key_counts(fp, group_by=[s.ACCOUNT_ID, TICK]).collect()
    by_account = cl.template_key_counts(fp).collect()
    assert by_tick.height > by_account.height > 0
    summed = by_tick.group_by(s.ACCOUNT_ID, cl.TEMPLATE_KEY).agg(pl.col(cl.KEY_COUNT).sum())
    cols = [s.ACCOUNT_ID, cl.TEMPLATE_KEY]
    assert summed.sort(cols).equals(by_account.select(*cols, cl.KEY_COUNT).sort(cols))
