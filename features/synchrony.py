"""Synchronised activity (in the manner of SynchroTrap): in which event-time ticks each account was active.

An account's recent activity is a 64-bit mask over ticks: bit i is set when it sent requests in the
tick i ticks before the one the mask is aligned to (bit 0: that tick itself). Accounts driven by one
operator's scheduler are active in the same windows; independent customers who happen to share a
phrasing (an app's system prompt) are not. Masks are kept per account and aged lazily: a mask
records the tick it was last updated at, and is shifted by the ticks elapsed whenever it is read or
updated, so a tick costs O(its active accounts).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from core import schema as s

ACTIVE_WINDOWS = "active_windows"
# one bit per tick: 64 ticks (16 hours of 15-minute ticks)
WINDOW_TICKS = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAG = "_lag"
_BIT = "_bit"
_BITS = pl.DataFrame(
    {
        _LAG: pl.Series(range(WINDOW_TICKS), dtype=pl.Int64),
        _BIT: pl.Series([1 << i for i in range(WINDOW_TICKS)], dtype=pl.UInt64),
    }
)


def tick_number(tick: datetime, step: timedelta) -> int:
    """A tick's ordinal in event time (ticks are multiples of `step` since the epoch)."""
    return (tick - _EPOCH) // step


def active_windows(events: pl.LazyFrame, *, at: datetime, step: timedelta, tick: str) -> pl.LazyFrame:
    """(account_id, active_windows) of the events' accounts as of tick `at`, in one pass.

    `tick` names the column holding the tick each event was processed at (a late event counts
    in the tick that took it). The reference the engine's per-tick updates must equal.
    """
    lag = (pl.lit(at, dtype=s.TS_DTYPE) - pl.col(tick)).dt.total_microseconds() // (step // timedelta(microseconds=1))
    return (
        events.select(s.ACCOUNT_ID, lag.cast(pl.Int64).alias(_LAG))
        .join(_BITS.lazy(), on=_LAG)
        .group_by(s.ACCOUNT_ID)
        .agg(pl.col(_BIT).bitwise_or().alias(ACTIVE_WINDOWS))
    )


def shift_windows(windows: np.ndarray, ticks: np.ndarray | int) -> np.ndarray:
    """Masks aged by `ticks` ticks (>= 0): older bits move up, those older than WINDOW_TICKS drop out."""
    ticks = np.broadcast_to(np.asarray(ticks, dtype=np.int64), windows.shape)
    # numpy leaves a shift by >= the word size undefined: clip it and zero those masks
    shifted = windows.astype(np.uint64) << np.clip(ticks, 0, WINDOW_TICKS - 1).astype(np.uint64)
    return np.where(ticks >= WINDOW_TICKS, np.uint64(0), shifted)


def recent(windows: np.ndarray, ticks: int) -> np.ndarray:
    """Only the bits of the last `ticks` ticks (the aligned tick included)."""
    mask = np.uint64((1 << ticks) - 1) if ticks < WINDOW_TICKS else np.uint64((1 << WINDOW_TICKS) - 1)
    return windows.astype(np.uint64) & mask


def co_active_ticks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many ticks both accounts of each pair were active in (masks aligned to one tick)."""
    return np.bitwise_count(a.astype(np.uint64) & b.astype(np.uint64)).astype(np.int64)


def window_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|common ticks| / |ticks either was active in| per pair (0 when neither was active)."""
    union = np.bitwise_count(a.astype(np.uint64) | b.astype(np.uint64)).astype(np.float64)
    return np.divide(co_active_ticks(a, b), union, out=np.zeros(union.shape), where=union > 0)


def pair_synchrony(windows: np.ndarray, *, max_pairs: int = 20_000, seed: int = 0) -> tuple[float, float]:
    """(share of pairs co-active in at least one tick, mean pairwise Jaccard) over the pairs of `windows`.

    All pairs of a small group; a fixed-seed sample of `max_pairs` of a large one (a 500-account
    ring has 125k pairs).
    """
    n = windows.size
    if n < 2:
        return 0.0, 0.0
    if n * (n - 1) // 2 > max_pairs:
        return random_pair_synchrony(windows, pairs=max_pairs, seed=seed)
    i, j = np.triu_indices(n, k=1)
    return _figures(windows[i], windows[j])


def random_pair_synchrony(windows: np.ndarray, *, pairs: int, seed: int) -> tuple[float, float]:
    """`pair_synchrony`'s two figures for `pairs` random pairs of the accounts `windows` (a fixed-seed sample)."""
    if windows.size < 2:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    i = rng.integers(0, windows.size, pairs)
    # a second index never equal to the first: offset by 1..n-1
    j = (i + rng.integers(1, windows.size, pairs)) % windows.size
    return _figures(windows[i], windows[j])


def _figures(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    return float((co_active_ticks(a, b) > 0).mean()), float(window_jaccard(a, b).mean())
