"""Per-account state that grows with history but is read and updated per tick in O(touched).

A tick touches a few thousand accounts out of tens of thousands, and the heaviest state (how often
each account used each prompt-wrapper key: millions of rows) must not be filtered, copied or
re-aggregated whole every tick. Counts live in sorted runs of (account index, key) composites,
merged log-structured: appending a tick's counts is a small sort, runs of similar size merge
(amortised O(log n) moves per row), and one account's rows are a binary search per run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import polars as pl

from core import schema as s
from features import synchrony as sy
from features import volume as v

ACCOUNT_INDEX = "account_idx"
# composite = account index << KEY_BITS | top KEY_BITS bits of the key: 2^28 accounts, and a
# 1e-4 chance that two of one account's 10,000 keys collide
KEY_BITS = 36
_SHIFT = np.uint64(KEY_BITS)
_KEY_MASK = np.uint64((1 << KEY_BITS) - 1)


class AccountIndex:
    """Dense integer ids for account ids, assigned in order of first sight (sorted within a call)."""

    def __init__(self) -> None:
        self._ids = pl.DataFrame(schema={s.ACCOUNT_ID: pl.String, ACCOUNT_INDEX: pl.UInt64})

    def __len__(self) -> int:
        return self._ids.height

    def lookup(self, accounts: pl.Series) -> pl.DataFrame:
        """(account_id, account_idx) for the distinct `accounts`, registering unseen ones."""
        wanted = pl.DataFrame({s.ACCOUNT_ID: accounts.unique().sort()})
        found = wanted.join(self._ids, on=s.ACCOUNT_ID, how="left", maintain_order="left")
        new = found.filter(pl.col(ACCOUNT_INDEX).is_null()).select(s.ACCOUNT_ID)
        if new.height:
            added = new.with_columns(
                (pl.int_range(new.height, dtype=pl.UInt64) + self._ids.height).alias(ACCOUNT_INDEX)
            )
            # one chunk: gathers (ids_of) on a frame of hundreds of appended chunks are ~25x slower
            self._ids = pl.concat([self._ids, added], rechunk=True)
            found = wanted.join(self._ids, on=s.ACCOUNT_ID, how="left", maintain_order="left")
        return found

    def ids_of(self, idx: np.ndarray) -> pl.Series:
        """Account ids of dense indices."""
        return self._ids.get_column(s.ACCOUNT_ID).gather(idx.astype(np.int64))


def compact(df: pl.DataFrame, *, max_chunks: int = 8) -> pl.DataFrame:
    """Rechunk state that grows by a chunk a tick: joins and gathers over hundreds of chunks crawl."""
    return df.rechunk() if df.n_chunks() > max_chunks else df


def _reduce(comp: np.ndarray, counts: np.ndarray, *, runs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sort composites and sum the counts of equal ones; `runs`: `comp` is sorted runs concatenated."""
    if comp.size == 0:
        return comp.astype(np.uint64), counts.astype(np.int64)
    # a stable sort (timsort) of concatenated sorted runs is a merge, near O(n); on unordered keys
    # quicksort is 1.5-2x faster, and the order of equal keys does not matter to their sum
    order = np.argsort(comp, kind="stable" if runs else "quicksort")
    comp, counts = comp[order], counts[order]
    starts = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
    return comp[starts], np.add.reduceat(counts, starts).astype(np.int64)


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenation of arange(lo[i], hi[i]) for all i, without a Python loop."""
    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(lo - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    return offsets + np.arange(total)


def fold_key(key: np.ndarray) -> np.ndarray:
    """A 64-bit hash key cut to the KEY_BITS a composite holds (its top bits)."""
    return key.astype(np.uint64) >> np.uint64(64 - KEY_BITS)


class KeyCounts:
    """Sum-mergeable counts per (account index, KEY_BITS-bit key), in log-structured sorted runs."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        """Rows held: a (account, key) pair may sit in more than one run until the runs merge."""
        return sum(keys.size for keys, _ in self._runs)

    def add(self, idx: np.ndarray, key: np.ndarray, n: np.ndarray) -> None:
        """Add counts `n` of `key` (< 2**KEY_BITS, see `fold_key`) for accounts `idx` (arrays of one length)."""
        self._append(self._run_of(idx, key, n))

    def add_new(self, idx: np.ndarray, key: np.ndarray, n: np.ndarray) -> np.ndarray:
        """`add`, returning the keys of the (account, key) pairs not counted before, one per new pair.

        The pairs are sorted for the new run anyway: finding the new ones costs no second sort.
        """
        run = self._run_of(idx, key, n)
        fresh = run[0][self._counts(run[0]) == 0] & _KEY_MASK
        self._append(run)
        return fresh

    @staticmethod
    def _run_of(idx: np.ndarray, key: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        comp = (idx.astype(np.uint64) << _SHIFT) | (key.astype(np.uint64) & _KEY_MASK)
        return _reduce(comp, n.astype(np.int64))

    def _append(self, run: tuple[np.ndarray, np.ndarray]) -> None:
        if run[0].size == 0:
            return
        self._runs.append(run)
        # keep run sizes geometric: few runs to search, each row moved O(log n) times
        while len(self._runs) > 1 and self._runs[-2][0].size <= 2 * self._runs[-1][0].size:
            (k2, c2), (k1, c1) = self._runs.pop(), self._runs.pop()
            self._runs.append(_reduce(np.concatenate([k1, k2]), np.concatenate([c1, c2]), runs=True))

    def rows_for(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(account index, key bits, count) of every key of the accounts `idx`, summed over runs."""
        idx = np.unique(idx.astype(np.uint64))
        lo_keys, hi_keys = idx << _SHIFT, (idx + np.uint64(1)) << _SHIFT
        comps, counts = [], []
        for keys, cnt in self._runs:
            take = _ranges(np.searchsorted(keys, lo_keys), np.searchsorted(keys, hi_keys))
            comps.append(keys[take])
            counts.append(cnt[take])
        if not comps:
            empty = np.zeros(0, dtype=np.uint64)
            return empty, empty, np.zeros(0, dtype=np.int64)
        comp, n = _reduce(np.concatenate(comps), np.concatenate(counts), runs=True)
        return comp >> _SHIFT, comp & _KEY_MASK, n

    def counts_of(self, idx: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Count of each exact (account index, key) pair, summed over runs (0 when absent)."""
        return self._counts((idx.astype(np.uint64) << _SHIFT) | (key.astype(np.uint64) & _KEY_MASK))

    def add_hashes(self, key: np.ndarray, n: np.ndarray) -> None:
        """Add counts `n` of whole 64-bit keys, no account slot (a tally of hashes, see RowTally)."""
        self._append(_reduce(key.astype(np.uint64), n.astype(np.int64)))

    def counts_of_hashes(self, key: np.ndarray) -> np.ndarray:
        """The count of each whole 64-bit key added by `add_hashes` (0 when absent)."""
        return self._counts(key.astype(np.uint64))

    def _counts(self, comp: np.ndarray) -> np.ndarray:
        out = np.zeros(comp.size, dtype=np.int64)
        for keys, cnt in self._runs:
            if keys.size == 0:
                continue
            pos = np.minimum(np.searchsorted(keys, comp), keys.size - 1)
            hit = keys[pos] == comp
            out[hit] += cnt[pos[hit]]
        return out


class KeyTally:
    """A count per key (e.g. how many accounts hold a wrapper key): KeyCounts' runs, one account slot for all."""

    def __init__(self) -> None:
        self._counts = KeyCounts()

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, key: np.ndarray, n: np.ndarray | None = None) -> None:
        """Count each of `key` once (or `n` times)."""
        ones = np.ones(key.size, dtype=np.int64) if n is None else n
        self._counts.add(np.zeros(key.size, dtype=np.uint64), key, ones)

    def counts_of(self, key: np.ndarray) -> np.ndarray:
        """The count of each of `key` (0 when never counted)."""
        return self._counts.counts_of(np.zeros(key.size, dtype=np.uint64), key)


class RowTally:
    """How many rows hold each combination of `columns`' values, by a 64-bit hash of the combination.

    Kept as tables change (a row added counts +1, a row replaced -1), so a tick reads counts (the
    popularity of a link value, whether an account's triple is known) with a binary search per row
    instead of scanning every account's rows. With a million combinations, two colliding has odds of
    ~3e-8. A row with a null in `columns` counts nowhere (as a join never matches a null).
    """

    def __init__(self, columns: tuple[str, ...] = (v.DIM, v.VALUE)) -> None:
        self.columns = columns
        self._counts = KeyCounts()

    def keys_of(self, rows: pl.DataFrame) -> np.ndarray:
        """The hash of each row's combination (uint64)."""
        return rows.select(pl.struct(*self.columns).hash(seed=41)).to_series().to_numpy()

    def add(self, rows: pl.DataFrame, *, sign: int = 1) -> None:
        """Count `rows` once each, or uncount them (`sign=-1`)."""
        self.add_keys(self.keys_of(rows.filter(~self._has_null())), sign=sign)

    def add_keys(self, key: np.ndarray, *, sign: int = 1) -> None:
        """Count hashes from `keys_of` (of rows without nulls) once each, or uncount them."""
        if key.size:
            self._counts.add_hashes(key, np.full(key.size, sign, dtype=np.int64))

    def counts_of(self, rows: pl.DataFrame) -> np.ndarray:
        """The count of each row's combination (0 when absent or holding a null)."""
        out = self.counts_of_keys(self.keys_of(rows))
        out[rows.select(self._has_null()).to_series().to_numpy()] = 0
        return out

    def counts_of_keys(self, key: np.ndarray) -> np.ndarray:
        """The count of each hash from `keys_of`."""
        return self._counts.counts_of_hashes(key)

    def _has_null(self) -> pl.Expr:
        return pl.any_horizontal(pl.col(c).is_null() for c in self.columns)


class ActivityWindows:
    """Per account (dense index), the ticks it was active in over the last WINDOW_TICKS (features/synchrony.py).

    Each mask is aligned to the tick it was last updated at and aged when touched or read, so a
    tick's update costs O(its active accounts), not O(everyone).
    """

    # the tick ordinal of an account never seen active: far enough back that its mask ages to 0
    _NEVER = np.int64(-(1 << 40))

    def __init__(self) -> None:
        self._windows = np.zeros(0, dtype=np.uint64)
        self._at = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return self._windows.size

    def mark(self, idx: np.ndarray, tick: int) -> None:
        """Record that the accounts `idx` were active in tick ordinal `tick` (ticks arrive in order)."""
        idx = np.unique(idx.astype(np.int64))
        if idx.size == 0:
            return
        self._grow(int(idx[-1]) + 1)
        aged = sy.shift_windows(self._windows[idx], tick - self._at[idx])
        self._windows[idx] = aged | np.uint64(1)
        self._at[idx] = tick

    def at(self, idx: np.ndarray, tick: int) -> np.ndarray:
        """The masks of accounts `idx` aligned to tick ordinal `tick` (0 for accounts never active)."""
        idx = idx.astype(np.int64)
        out = np.zeros(idx.size, dtype=np.uint64)
        known = idx < self._windows.size
        out[known] = sy.shift_windows(self._windows[idx[known]], tick - self._at[idx[known]])
        return out

    def active_since(self, tick: int, ticks: int) -> np.ndarray:
        """Dense indices of the accounts active in the last `ticks` ticks up to tick ordinal `tick`."""
        return np.flatnonzero(self._at > tick - ticks)

    def _grow(self, n: int) -> None:
        if n <= self._windows.size:
            return
        # doubling: appending accounts a tick at a time must not copy the arrays every tick
        size = max(n, 2 * self._windows.size, 1024)
        self._windows = np.concatenate([self._windows, np.zeros(size - self._windows.size, dtype=np.uint64)])
        self._at = np.concatenate([self._at, np.full(size - self._at.size, self._NEVER, dtype=np.int64)])


class KeyExamples(Mapping[int, str]):
    """Example prompt snippets of wrapper keys: the keys sorted (a membership index) beside their texts.

    One structure for both, so the tick's keys are checked with one binary search and an example
    is never held in two places. Read as a mapping (key -> snippet).
    """

    def __init__(self) -> None:
        self.sorted_keys = np.zeros(0, dtype=np.uint64)
        self.texts = np.zeros(0, dtype=object)

    def __len__(self) -> int:
        return int(self.sorted_keys.size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.sorted_keys.tolist())

    def __getitem__(self, key: int) -> str:
        i = int(np.searchsorted(self.sorted_keys, np.uint64(key)))
        if i == self.sorted_keys.size or self.sorted_keys[i] != np.uint64(key):
            raise KeyError(key)
        return str(self.texts[i])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (int, np.integer)) or key < 0:
            return False
        return bool(self.holds(np.array([key], dtype=np.uint64))[0])

    def holds(self, key: np.ndarray) -> np.ndarray:
        """Per key of `key` (uint64), whether an example of it is kept."""
        if not self.sorted_keys.size:
            return np.zeros(key.size, dtype=bool)
        return self.sorted_keys[np.minimum(np.searchsorted(self.sorted_keys, key), self.sorted_keys.size - 1)] == key

    def add(self, key: np.ndarray, texts: list[str]) -> None:
        """Keep examples of keys not held yet (`key` unique, none held)."""
        order = np.argsort(key, kind="stable")
        key = key[order]
        at = np.searchsorted(self.sorted_keys, key)
        self.sorted_keys = np.insert(self.sorted_keys, at, key)
        self.texts = np.insert(self.texts, at, np.array(texts, dtype=object)[order])

    def keep(self, key: np.ndarray) -> None:
        """Drop every example but those of `key`."""
        mask = np.isin(self.sorted_keys, key)
        self.sorted_keys, self.texts = self.sorted_keys[mask], self.texts[mask]


class _Horizon:
    """Generations of `KeyCounts` holding the last `period` to 2 x `period` ticks: bounded memory, by tick ordinal.

    Ticks run in order whatever the batching, so which generation a tick writes to (its ordinal //
    `period`) and when the oldest is dropped are the same for every batching of one stream.
    """

    def __init__(self, period: int) -> None:
        self.period = max(1, period)
        self._at: int | None = None
        # oldest first: at most two, the current generation last
        self.gens: list[KeyCounts] = []

    def at(self, tick: int) -> KeyCounts:
        """The generation tick ordinal `tick` writes to, dropping those older than the previous one."""
        gen = tick // self.period
        if self._at is None or gen > self._at:
            keep = [self.gens[-1]] if self._at == gen - 1 and self.gens else []
            self.gens, self._at = [*keep, KeyCounts()], gen
        return self.gens[-1]

    def __len__(self) -> int:
        return sum(len(g) for g in self.gens)


class TextNovelty:
    """Which prompt texts the platform answered before, and per account how many of its texts were known.

    A benchmark harness re-runs a fixed dataset of public prompts (a run a few hours later, another
    model, pass@k samples of each item); a harvester wants answers it does not have, so its texts
    (fresh questions in its wrappers) are new to the platform. Texts are KEY_BITS-bit hashes
    (`fold_key`): with a million texts, a new one is taken for known with odds of ~1e-5. Memory is
    bounded: texts are remembered for `horizon` to 2 x `horizon` ticks (`_Horizon`). Per account
    (dense index): texts sent (distinct per tick) and known. Which texts are known:

    * `min_senders` None (the re-send rule): texts sent in earlier ticks by anyone (the account itself
      included), or answered successfully twice or more within the tick (pass@k; a retry follows a
      failure). Gamed by a harvester that samples each question twice or re-sends a quarter of them.
    * `min_senders` k (the public rule): texts at least k distinct ordinary customers other than the
      account's own sent (in this tick or within the horizon). A customer is an organisation (its
      accounts count once) or an account without one; ordinary senders are the caller's choice (the
      engine: unflagged accounts whose prompts do not mostly target capabilities), so neither an
      account's own re-sends, nor pass@k, nor a ring of harvesters sending each other's questions
      make a text public: only many ordinary customers do (a public benchmark's items).
    """

    def __init__(self, horizon: int = 1 << 40, min_senders: int | None = None) -> None:
        self.min_senders = min_senders
        # the re-send rule: texts seen (account slot 0); the public rule: (customer, text) pairs of ordinary senders
        self._texts = _Horizon(horizon)
        # the public rule: per generation, how many ordinary customers sent each text (account slot 0)
        self._senders = _Horizon(horizon)
        self._sent = np.zeros(0, dtype=np.int64)
        self._known = np.zeros(0, dtype=np.int64)
        # texts known public from the start (sorted KEY_BITS keys): never forgotten, a few thousand
        self._public = np.zeros(0, dtype=np.uint64)

    def preload(self, key: np.ndarray) -> None:
        """Texts known public from the start (KEY_BITS keys: public benchmark datasets): known to every account."""
        self._public = np.union1d(self._public, key.astype(np.uint64))

    def __len__(self) -> int:
        """Rows held (bounded by the horizon)."""
        return len(self._texts) + len(self._senders)

    def add(
        self,
        idx: np.ndarray,
        key: np.ndarray,
        n_ok: np.ndarray,
        *,
        tick: int = 0,
        customer: np.ndarray | None = None,
        ordinary: np.ndarray | None = None,
    ) -> None:
        """One tick's distinct (account index, text key) pairs, with how often each was answered successfully.

        The public rule also takes each row's customer (dense index) and whether its sender is ordinary.
        """
        if key.size == 0:
            return
        idx, key = idx.astype(np.int64), key.astype(np.uint64)
        if self.min_senders is None:
            known = self._seen_before(key, tick) | (n_ok >= 2)
        else:
            assert customer is not None and ordinary is not None
            known = self._public_now(key, tick, customer.astype(np.uint64), ordinary.astype(bool))
        known |= np.isin(key, self._public)
        n = int(idx.max()) + 1
        if n > self._sent.size:
            size = max(n, 2 * self._sent.size, 1024)
            self._sent = np.concatenate([self._sent, np.zeros(size - self._sent.size, dtype=np.int64)])
            self._known = np.concatenate([self._known, np.zeros(size - self._known.size, dtype=np.int64)])
        self._sent += np.bincount(idx, minlength=self._sent.size)
        self._known += np.bincount(idx, weights=known, minlength=self._known.size).astype(np.int64)

    def _seen_before(self, key: np.ndarray, tick: int) -> np.ndarray:
        """The re-send rule: was each text sent in an earlier tick of the horizon (then note the tick's texts)."""
        current = self._texts.at(tick)
        zero = np.zeros(key.size, dtype=np.uint64)
        seen = np.zeros(key.size, dtype=bool)
        for gen in self._texts.gens:
            seen |= gen.counts_of(zero, key) > 0
        # once per text of the tick, whoever sent it
        uniq = np.unique(key)
        current.add(np.zeros(uniq.size, dtype=np.uint64), uniq, np.ones(uniq.size, dtype=np.int64))
        return seen

    def _public_now(self, key: np.ndarray, tick: int, customer: np.ndarray, ordinary: np.ndarray) -> np.ndarray:
        """The public rule: did min_senders ordinary customers besides the row's own send each text (this tick too)?"""
        pairs, tally = self._texts.at(tick), self._senders.at(tick)
        # this tick's ordinary (customer, text) pairs first: the senders of one tick vouch for each other's texts
        fresh = pairs.add_new(customer[ordinary], key[ordinary], np.ones(int(ordinary.sum()), dtype=np.int64))
        tally.add(np.zeros(fresh.size, dtype=np.uint64), fresh, np.ones(fresh.size, dtype=np.int64))
        zero = np.zeros(key.size, dtype=np.uint64)
        others = np.zeros(key.size, dtype=np.int64)
        # a customer counted in two generations would count twice: each generation's count stands alone
        for p, t in zip(self._texts.gens, self._senders.gens, strict=True):
            own = (p.counts_of(customer, key) > 0).astype(np.int64)
            others = np.maximum(others, t.counts_of(zero, key) - own)
        assert self.min_senders is not None
        return others >= self.min_senders

    def of(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(texts sent, texts known) of accounts `idx` (0, 0 for accounts never seen)."""
        idx = idx.astype(np.int64)
        sent, known = np.zeros(idx.size, dtype=np.int64), np.zeros(idx.size, dtype=np.int64)
        ok = idx < self._sent.size
        sent[ok], known[ok] = self._sent[idx[ok]], self._known[idx[ok]]
        return sent, known


def _union_rows(horizon: _Horizon, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (account index, key bits) pairs of the accounts `idx` over a horizon's generations."""
    comps = []
    for gen in horizon.gens:
        rows, key, _ = gen.rows_for(idx)
        comps.append((rows << _SHIFT) | key)
    if not comps:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, empty
    comp = np.unique(np.concatenate(comps))
    return comp >> _SHIFT, comp & _KEY_MASK


class PhraseMemory:
    """Accounts' phrases, each phrase's holders and the texts they came in, for `period` to 2 x `period` ticks.

    Bounded as TextNovelty is (`_Horizon`, by tick ordinal: the same for every batching). Per
    generation: (account, phrase) and (account, text) counts, and how many accounts used each phrase.
    Read over the generations kept: an account's phrases and texts are their union, a phrase's holders
    the most one generation counted (an account using it in both would count twice in a sum).
    """

    def __init__(self, period: int) -> None:
        self._phrases = _Horizon(period)
        self._holders = _Horizon(period)
        self._texts = _Horizon(period)

    def __len__(self) -> int:
        """Rows held (bounded by the horizon)."""
        return len(self._phrases) + len(self._holders) + len(self._texts)

    def add(self, idx: np.ndarray, phrase: np.ndarray, text: np.ndarray, *, tick: int) -> None:
        """One tick's (account index, phrase key, text key) rows (KEY_BITS keys, see `fold_key`)."""
        ones = np.ones(idx.size, dtype=np.int64)
        # an account's first use of a phrase in the generation makes it one more holder of it
        fresh = self._phrases.at(tick).add_new(idx, phrase, ones)
        self._holders.at(tick).add(np.zeros(fresh.size, dtype=np.uint64), fresh, np.ones(fresh.size, dtype=np.int64))
        self._texts.at(tick).add(idx, text, ones)

    def phrases_of(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (account index, phrase key) pairs of the accounts `idx`."""
        return _union_rows(self._phrases, idx)

    def texts_of(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (account index, text key) pairs of the accounts `idx`."""
        return _union_rows(self._texts, idx)

    def holders_of(self, phrase: np.ndarray) -> np.ndarray:
        """How many accounts used each phrase (0 when none within the horizon)."""
        out = np.zeros(phrase.size, dtype=np.int64)
        zero = np.zeros(phrase.size, dtype=np.uint64)
        for gen in self._holders.gens:
            out = np.maximum(out, gen.counts_of(zero, phrase))
        return out
