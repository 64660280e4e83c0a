"""Log-structured per-account counts: the same sums as a plain group-by, whatever the arrival order."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.state import KEY_BITS, AccountIndex, KeyCounts, KeyExamples, PhraseMemory, RowTally, fold_key

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


def test_text_novelty_forgets_texts_past_its_horizon_by_tick() -> None:
    from detector.state import TextNovelty

    novelty = TextNovelty(horizon=4)
    one = np.array([1], dtype=np.uint64)
    novelty.add(np.array([0]), one, np.array([1]), tick=1)
    # ticks 4-7 are the next generation: text 1 of tick 1 is still remembered
    novelty.add(np.array([1]), one, np.array([1]), tick=7)
    # ticks 8-11 keep ticks 4-7 (tick 7's sending of text 1) but no longer tick 1's
    novelty.add(np.array([2]), one, np.array([1]), tick=8)
    # ticks 16-19 keep ticks 12-15 (none): tick 8's sending is forgotten
    novelty.add(np.array([3]), one, np.array([1]), tick=16)
    assert novelty.of(np.array([0, 1, 2, 3]))[1].tolist() == [0, 1, 1, 0]
    assert len(novelty) == 1  # the generation of tick 16 only: the older ones were dropped


def test_public_texts_are_those_many_ordinary_customers_sent_not_re_sends() -> None:
    from detector.state import TextNovelty

    novelty = TextNovelty(min_senders=3)
    ok2, text = np.array([2]), np.array([7], dtype=np.uint64)

    def send(account: int, customer: int, ordinary: bool, tick: int, n_ok: np.ndarray = ok2) -> None:
        who = {"customer": np.array([customer]), "ordinary": np.array([ordinary])}
        novelty.add(np.array([account]), text, n_ok, tick=tick, **who)

    # account 0 answered twice (pass@k) in tick 0 and re-sending it in tick 1: never public to itself
    send(0, 0, True, 0)
    send(0, 0, True, 1)
    # a ring of harvesters (not ordinary) sending it once each makes it no more public
    for a in range(10, 20):
        send(a, a, False, 2)
    # two accounts of one organisation count once
    send(1, 1, True, 3)
    send(2, 1, True, 3)
    assert novelty.of(np.array([0, 1, 2, 10, 19]))[1].tolist() == [0, 0, 0, 0, 0]
    # a third ordinary customer: public to every sender but for themselves (the other two customers)
    send(3, 3, True, 4)
    send(4, 4, False, 5)  # a fourth account: three ordinary customers besides its own
    send(0, 0, True, 5)  # account 0: customers 1 and 3 besides its own (0)
    assert novelty.of(np.array([0, 3, 4]))[1].tolist() == [0, 0, 1]
    send(5, 5, True, 6)
    send(0, 0, True, 6)
    assert novelty.of(np.array([0, 5]))[1].tolist() == [1, 1]


def test_texts_preloaded_as_public_are_known_to_everyone_under_either_rule() -> None:
    from detector.state import TextNovelty

    for novelty in (TextNovelty(), TextNovelty(min_senders=3)):
        novelty.preload(np.array([5, 7], dtype=np.uint64))
        who = {"customer": np.array([0, 0]), "ordinary": np.array([False, False])}
        novelty.add(np.array([0, 0]), np.array([7, 8], dtype=np.uint64), np.array([1, 1]), tick=0, **who)
        assert [x.tolist() for x in novelty.of(np.array([0]))] == [[2], [1]]


def test_phrase_memory_is_the_union_of_its_generations_and_forgets_past_its_horizon() -> None:
    u = np.uint64
    memory = PhraseMemory(period=4)

    def add(tick: int, rows: list[tuple[int, int, int]]) -> None:
        idx, phrase, text = (np.array(c, dtype=np.uint64) for c in zip(*rows, strict=True))
        memory.add(idx, phrase, text, tick=tick)

    def pairs(got: tuple[np.ndarray, np.ndarray]) -> set[tuple[int, int]]:
        return set(zip(got[0].tolist(), got[1].tolist(), strict=True))

    everyone = np.arange(4, dtype=np.uint64)
    # ticks 0-3: generation 0; account 1 uses phrase 7 twice (one holder), account 2 once
    add(0, [(1, 7, 100), (1, 8, 100)])
    add(2, [(1, 7, 101), (2, 7, 102)])
    assert pairs(memory.phrases_of(everyone)) == {(1, 7), (1, 8), (2, 7)}
    assert memory.holders_of(np.array([7, 8, 9], dtype=u)).tolist() == [2, 1, 0]
    # tick 5: generation 1; the pair (1, 7) is held in both, once in the union; holders the most of one generation
    add(5, [(1, 7, 103), (3, 7, 104)])
    assert pairs(memory.phrases_of(everyone)) == {(1, 7), (1, 8), (2, 7), (3, 7)}
    assert pairs(memory.texts_of(np.array([1], dtype=u))) == {(1, 100), (1, 101), (1, 103)}
    assert memory.holders_of(np.array([7], dtype=u)).tolist() == [2]
    # tick 9: generation 2; generation 0 is gone, generation 1 kept
    add(9, [(2, 9, 105)])
    assert pairs(memory.phrases_of(everyone)) == {(1, 7), (3, 7), (2, 9)}
    assert memory.holders_of(np.array([7, 8, 9], dtype=u)).tolist() == [2, 0, 1]
    # a long quiet gap drops everything before it
    add(40, [(0, 1, 106)])
    assert pairs(memory.phrases_of(everyone)) == {(0, 1)}
    assert len(memory) == 3
