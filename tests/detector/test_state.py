"""Log-structured per-account counts: the same sums as a plain group-by, whatever the arrival order."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.state import KEY_BITS, AccountIndex, KeyCounts, KeyExamples, RowTally, fold_key

rows = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, (1 << KEY_BITS) - 1), st.integers(1, 5)), min_size=0, max_size=300
)


Chunks = list[list[tuple[int, int, int]]]


@given(chunks=st.lists(rows, min_size=1, max_size=12), probe=st.lists(st.integers(0, 45), max_size=10))
@settings(max_examples=150, deadline=None)
def test_counts_equal_a_group_by_of_everything_added(chunks: Chunks, probe: list[int]) -> None:
    counts = KeyCounts()
    seen: set[tuple[int, int]] = set()
    for chunk in chunks:
        arr = np.array(chunk, dtype=np.int64).reshape(-1, 3)
        fresh = counts.add_new(arr[:, 0].astype(np.uint64), arr[:, 1].astype(np.uint64), arr[:, 2])
        # the keys of the pairs first seen in this chunk, one per pair
        new_pairs = {(i, k) for i, k, _ in chunk} - seen
        assert sorted(fresh.tolist()) == sorted(k for _, k in new_pairs)
        seen |= new_pairs
    everything = [r for chunk in chunks for r in chunk]
    expected = (
        pl.DataFrame(everything, schema=["idx", "key", "n"], orient="row")
        .filter(pl.col("idx").is_in(probe))
        .group_by("idx", "key")
        .agg(pl.col("n").sum())
        .sort("idx", "key")
    )
    idx, key, n = counts.rows_for(np.array(probe, dtype=np.uint64))
    got = pl.DataFrame({"idx": idx.astype(np.int64), "key": key.astype(np.int64), "n": n})
    assert got.rows() == expected.rows()
    # a pair may sit in several runs until they merge, never fewer rows than distinct pairs
    assert len(counts) >= len({(i, k) for i, k, _ in everything})


def test_runs_stay_few_as_ticks_append() -> None:
    counts = KeyCounts()
    rng = np.random.default_rng(0)
    for _ in range(500):
        idx = rng.integers(0, 1000, 50).astype(np.uint64)
        counts.add(idx, rng.integers(0, 1 << 20, 50).astype(np.uint64), np.ones(50, dtype=np.int64))
    # geometric run sizes: a logarithmic number of runs to search per read
    assert len(counts._runs) <= 16


def test_fold_key_keeps_the_top_bits() -> None:
    keys = np.array([0, 1 << 63, (1 << 64) - 1], dtype=np.uint64)
    assert fold_key(keys).tolist() == [0, 1 << (KEY_BITS - 1), (1 << KEY_BITS) - 1]


def test_account_index_is_dense_and_stable() -> None:
    index = AccountIndex()
    first = index.lookup(pl.Series(["b", "a", "b"]))
    assert first.rows() == [("a", 0), ("b", 1)]
    second = index.lookup(pl.Series(["c", "a"]))
    assert second.rows() == [("a", 0), ("c", 2)]
    assert index.ids_of(np.array([2, 0, 1])).to_list() == ["c", "a", "b"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=20, unique=True), max_size=6))
def test_key_examples_behave_as_a_dict_of_their_keys(batches: list[list[int]]) -> None:
    examples, want = KeyExamples(), {}
    for batch in batches:
        key = np.array(batch, dtype=np.uint64)
        new = key[~examples.holds(key)]
        examples.add(new, [f"text {k}" for k in new.tolist()])
        want.update({k: f"text {k}" for k in new.tolist()})
        assert examples == want
        assert examples.holds(key).all()
        assert list(examples) == sorted(want)
    kept = sorted(want)[::2]
    examples.keep(np.array(kept, dtype=np.uint64))
    assert examples == {k: want[k] for k in kept}
    assert 12345678901 not in examples or 12345678901 in want


def test_text_novelty_counts_texts_answered_before_or_twice_in_a_tick() -> None:
    from detector.state import TextNovelty

    novelty = TextNovelty()
    # tick 1: account 0 sends texts 1, 2 (text 2 answered twice: pass@k); account 3 sends text 1 too
    novelty.add(np.array([0, 0, 3]), np.array([1, 2, 1], dtype=np.uint64), np.array([1, 2, 1]))
    assert [x.tolist() for x in novelty.of(np.array([0, 3, 5]))] == [[2, 1, 0], [1, 0, 0]]
    # tick 2: account 5 sends text 1 (known: answered before) and text 9 (new); a retry after a failure is no re-run
    novelty.add(np.array([5, 5]), np.array([1, 9], dtype=np.uint64), np.array([1, 1]))
    assert [x.tolist() for x in novelty.of(np.array([0, 5, 99]))] == [[2, 2, 0], [1, 1, 0]]


Rows = list[list[tuple[str, str | None, int]]]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(["ip", "ua"]), st.one_of(st.none(), st.sampled_from("abcdef")), st.sampled_from([1, -1])
            ),
            max_size=12,
        ),
        max_size=6,
    )
)
def test_row_tally_counts_like_a_dict_of_rows_added_and_removed(ticks: Rows) -> None:
    tally, expected = RowTally(("dim", "value")), {}
    for tick in ticks:
        for sign in (1, -1):
            rows = [(d, val) for d, val, sg in tick if sg == sign]
            frame = pl.DataFrame(rows, schema={"dim": pl.String, "value": pl.String}, orient="row")
            tally.add(frame, sign=sign)
            for d, val in rows:
                if val is not None:  # a null value counts nowhere, as a join never matches it
                    expected[(d, val)] = expected.get((d, val), 0) + sign
    probe = pl.DataFrame(
        [(d, val) for d in ("ip", "ua") for val in [None, *"abcdefg"]],
        schema={"dim": pl.String, "value": pl.String},
        orient="row",
    )
    got = tally.counts_of(probe)
    want = [expected.get((d, val), 0) if val is not None else 0 for d, val in probe.iter_rows()]
    assert got.tolist() == want
