"""When requests happen: diurnal session starts, human sessions, machine schedules (vectorised)."""

from __future__ import annotations

import numpy as np

from simulator.catalog import DAY_MS, HOUR_MS, PROFILE_CDF


def diurnal_times(
    rng: np.random.Generator, tz_h: np.ndarray, profile: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """One time per item in [lo, hi), following the item's local-hour profile in its timezone."""
    n = tz_h.size
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    # Draw a local day and an hour from the profile; redraw the few that fall outside the range
    # (rejection keeps the daily shape exact, which wrapping around the window would distort).
    for _ in range(40):
        if todo.size == 0:
            break
        tz = np.rint(tz_h[todo] * HOUR_MS).astype(np.int64)
        llo, lhi = lo[todo] + tz, hi[todo] + tz
        d0, d1 = llo // DAY_MS, (lhi - 1) // DAY_MS
        day = d0 + (rng.random(todo.size) * (d1 - d0 + 1)).astype(np.int64)
        hour = (PROFILE_CDF[profile[todo]] < rng.random(todo.size)[:, None]).sum(axis=1)
        t = day * DAY_MS + hour * HOUR_MS + (rng.random(todo.size) * HOUR_MS).astype(np.int64) - tz
        ok = (t >= lo[todo]) & (t < hi[todo])
        out[todo[ok]] = t[ok]
        todo = todo[~ok]
    if todo.size:
        out[todo] = lo[todo] + (rng.random(todo.size) * (hi[todo] - lo[todo])).astype(np.int64)
    return out


def expand_sessions(
    rng: np.random.Generator,
    start: np.ndarray,
    length: np.ndarray,
    gap_median_s: np.ndarray,
    gap_sigma: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events of sessions: (session index, ts, is-first), lognormal think times between turns."""
    length = np.maximum(length.astype(np.int64), 1)
    sess = np.repeat(np.arange(start.size), length)
    first_pos = np.cumsum(length) - length
    first = np.zeros(sess.size, dtype=bool)
    first[first_pos] = True
    gaps = rng.lognormal(np.log(gap_median_s[sess] * 1000.0), gap_sigma)
    gaps[first] = 0.0
    cs = np.cumsum(gaps)
    offset = cs - np.repeat(cs[first_pos], length)
    return sess, start[sess] + offset.astype(np.int64), first


def regular_series(rng: np.random.Generator, start: int, end: int, interval_ms: float, jitter: float) -> np.ndarray:
    """A machine schedule: one request every `interval_ms` (relative jitter), from start to end."""
    if end <= start:
        return np.zeros(0, np.int64)
    n = int((end - start) / interval_ms * 1.1) + 2
    steps = interval_ms * (1.0 + jitter * rng.uniform(-1.0, 1.0, n))
    t = start + np.cumsum(steps).astype(np.int64) - int(steps[0])
    return t[t < end]
