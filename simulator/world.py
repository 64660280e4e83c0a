"""State shared by the population generators: RNG streams, interned strings, accounts, events.

Events are held as integer index arrays into interned string tables (IPs, user agents, keys,
prompts) so every generator stays vectorised; strings are materialised once, when writing.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from simulator import catalog as c
from simulator.corpus import PromptCorpus


def hex_ids(rng: np.random.Generator, n: int, nbytes: int, prefix: str) -> list[str]:
    """`n` random hex identifiers with a prefix (not guaranteed unique; use wide ids)."""
    h = rng.bytes(n * nbytes).hex()
    w = 2 * nbytes
    return [prefix + h[i * w : (i + 1) * w] for i in range(n)]


class Interner:
    """A string table: each distinct value gets a stable integer index in first-seen order."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, value: str) -> int:
        """Index of `value`, adding it if new."""
        i = self._index.get(value)
        if i is None:
            i = len(self.values)
            self._index[value] = i
            self.values.append(value)
        return i

    def add_many(self, values: list[str]) -> np.ndarray:
        """Indices of `values`, adding new ones."""
        return np.fromiter((self.add(v) for v in values), dtype=np.int32, count=len(values))


@dataclass
class EventChunk:
    """Events of one population as parallel arrays (indices into the world's tables)."""

    acct: np.ndarray
    ts: np.ndarray
    ip: np.ndarray
    ua: np.ndarray
    key: np.ndarray
    model: np.ndarray
    endpoint: np.ndarray
    prompt: np.ndarray
    affix: np.ndarray
    lower: np.ndarray
    sph: np.ndarray
    sys_tokens: np.ndarray
    completion_tokens: np.ndarray
    status: np.ndarray
    latency_ms: np.ndarray

    def __len__(self) -> int:
        return int(self.ts.size)

    def take(self, idx: np.ndarray) -> EventChunk:
        """The events at `idx` (a boolean mask or indices)."""
        return EventChunk(**{k: v[idx] for k, v in vars(self).items()})

    @staticmethod
    def empty() -> EventChunk:
        """A chunk without events."""
        names = [f.name for f in fields(EventChunk)]
        return EventChunk(**{k: np.zeros(0, bool if k == "lower" else np.int64) for k in names})

    @staticmethod
    def concat(chunks: list[EventChunk]) -> EventChunk:
        """All events of `chunks` in order."""
        if not chunks:
            return EventChunk.empty()
        keys = list(vars(chunks[0]))
        return EventChunk(**{k: np.concatenate([getattr(ch, k) for ch in chunks]) for k in keys})


@dataclass(frozen=True)
class ResponseSpec:
    """How the API answers a population: completion length, max_tokens cap, error rates."""

    completion_median: float = 280.0
    completion_sigma: float = 0.85
    max_tokens: int = 4096
    # probabilities of 400, 401, 429, 500, 529; the rest is 200
    errors: tuple[float, float, float, float, float] = (0.006, 0.001, 0.010, 0.003, 0.004)


ERROR_CODES = np.array([400, 401, 429, 500, 529], dtype=np.int64)


@dataclass
class AccountRow:
    """One simulated account and the facts its account events report."""

    label: str
    group: str | None
    org_id: str
    signup_ms: int
    email_domain: str
    email_shape: str
    country: str
    signup_ip: str
    plan: str
    kyc: str
    payment_fp: str | None
    payment_ms: int | None
    kyc_ms: int | None


@dataclass
class World:
    """Everything the generators accumulate before the writer materialises it."""

    seed: int
    start_ms: int
    end_ms: int
    corpus: PromptCorpus
    ips: Interner = field(default_factory=Interner)
    uas: Interner = field(default_factory=Interner)
    keys: Interner = field(default_factory=Interner)
    sphs: Interner = field(default_factory=Interner)
    extra_prompts: list[str] = field(default_factory=list)
    # capability family code of each extra prompt (-1: not an extraction prompt)
    extra_family: list[int] = field(default_factory=list)
    accounts: list[AccountRow] = field(default_factory=list)
    account_events: list[tuple[int, int, str, dict[str, Any]]] = field(default_factory=list)
    chunks: list[EventChunk] = field(default_factory=list)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rng(self, name: str) -> np.random.Generator:
        """An independent RNG stream per purpose, so one generator's draws never shift another's."""
        return np.random.default_rng([self.seed, zlib.crc32(name.encode())])

    @property
    def window_ms(self) -> int:
        return self.end_ms - self.start_ms

    def add_prompts(self, texts: list[str], family: list[int] | None = None) -> np.ndarray:
        """Append generated prompts (with their capability family code); returns their indices."""
        base = len(self.corpus) + len(self.extra_prompts)
        self.extra_prompts.extend(texts)
        self.extra_family.extend(family if family is not None else [-1] * len(texts))
        return np.arange(base, base + len(texts), dtype=np.int64)

    def add_account(self, row: AccountRow) -> int:
        """Register an account; returns its index."""
        self.accounts.append(row)
        return len(self.accounts) - 1

    def add_account_event(self, acct: int, ts: int, kind: str, fields: dict[str, Any]) -> None:
        """A later account event (payment_added, kyc_update, profile_update)."""
        self.account_events.append((acct, ts, kind, fields))

    def add_keys(self, rng: np.random.Generator, n_per_account: np.ndarray) -> np.ndarray:
        """Fresh API keys for each account; returns the index of each account's first key."""
        ids = hex_ids(rng, int(n_per_account.sum()), 8, "key_")
        first = self.keys.add_many(ids)
        starts = np.cumsum(n_per_account) - n_per_account
        return first[starts] if first.size else np.zeros(0, np.int32)


def pick_keys(rng: np.random.Generator, key_base: np.ndarray, n_keys: np.ndarray) -> np.ndarray:
    """A key per item, chosen uniformly among its account's keys."""
    return key_base + (rng.random(key_base.size) * n_keys).astype(np.int64)


def respond(
    rng: np.random.Generator,
    *,
    acct: np.ndarray,
    ts: np.ndarray,
    ip: np.ndarray,
    ua: np.ndarray,
    key: np.ndarray,
    model: np.ndarray,
    endpoint: np.ndarray,
    prompt: np.ndarray,
    spec: ResponseSpec,
    affix: np.ndarray | None = None,
    lower: np.ndarray | None = None,
    sph: np.ndarray | None = None,
    sys_tokens: int = 0,
    completion_scale: np.ndarray | None = None,
) -> EventChunk:
    """Complete requests with the API's response: status, completion tokens and latency."""
    n = ts.size
    u = rng.random(n)
    status = np.full(n, 200, dtype=np.int64)
    edges = np.cumsum(spec.errors)
    for code, lo, hi in zip(ERROR_CODES, np.r_[0.0, edges[:-1]], edges, strict=True):
        status[(u >= lo) & (u < hi)] = code
    comp = np.rint(rng.lognormal(np.log(spec.completion_median), spec.completion_sigma, n))
    if completion_scale is not None:
        comp = np.rint(comp * completion_scale)
    comp = np.clip(comp, 1, spec.max_tokens).astype(np.int64)
    ok = status == 200
    comp[~ok] = 0
    model = model.astype(np.int64)
    lat = c.MODEL_TTFT_MS[model] * rng.lognormal(0.0, 0.3, n) + comp * c.MODEL_MS_PER_TOKEN[model] * rng.lognormal(
        0.0, 0.15, n
    )
    # Failures answer fast (rejected at the gateway) or slow (timeouts, overload), never per token.
    err_lat = np.select(
        [status == 400, status == 401, status == 429, status == 500, status == 529],
        [
            rng.uniform(30, 150, n),
            rng.uniform(8, 40, n),
            rng.uniform(10, 80, n),
            rng.uniform(200, 30_000, n),
            rng.uniform(100, 1_500, n),
        ],
        default=0.0,
    )
    lat = np.where(ok, lat, err_lat)
    return EventChunk(
        acct=acct.astype(np.int64),
        ts=ts.astype(np.int64),
        ip=ip.astype(np.int64),
        ua=ua.astype(np.int64),
        key=key.astype(np.int64),
        model=model,
        endpoint=endpoint.astype(np.int64),
        prompt=prompt.astype(np.int64),
        affix=np.zeros(n, np.int64) if affix is None else affix.astype(np.int64),
        lower=np.zeros(n, bool) if lower is None else lower.astype(bool),
        sph=np.full(n, -1, np.int64) if sph is None else sph.astype(np.int64),
        sys_tokens=np.full(n, sys_tokens, np.int64),
        completion_tokens=comp,
        status=status,
        latency_ms=np.rint(lat).astype(np.int64),
    )


def with_retries(
    rng: np.random.Generator,
    chunk: EventChunk,
    *,
    p_retry: float,
    end_ms: int,
    backoff_median_s: float = 4.0,
    spec: ResponseSpec | None = None,
) -> EventChunk:
    """Add the client retries that follow throttled (429) and failed (5xx) requests."""
    failed = np.flatnonzero((chunk.status == 429) | (chunk.status >= 500))
    retry = failed[rng.random(failed.size) < p_retry]
    if retry.size == 0:
        return chunk
    again = chunk.take(retry)
    again.ts = (
        again.ts
        + again.latency_ms
        + np.rint(rng.lognormal(np.log(backoff_median_s * 1000), 0.6, retry.size)).astype(np.int64)
    )
    spec = spec or ResponseSpec()
    fresh = respond(
        rng,
        acct=again.acct,
        ts=again.ts,
        ip=again.ip,
        ua=again.ua,
        key=again.key,
        model=again.model,
        endpoint=again.endpoint,
        prompt=again.prompt,
        spec=ResponseSpec(
            spec.completion_median,
            spec.completion_sigma,
            spec.max_tokens,
            (0.0, 0.0, 0.004, 0.002, 0.002),
        ),
    )
    again.status, again.completion_tokens, again.latency_ms = (
        fresh.status,
        fresh.completion_tokens,
        fresh.latency_ms,
    )
    again = again.take(again.ts < end_ms)
    return EventChunk.concat([chunk, again])


def ipv4_strings(a: np.ndarray, b: np.ndarray, cc: np.ndarray, d: np.ndarray) -> list[str]:
    """Dotted quads from octet arrays."""
    return [f"{w}.{x}.{y}.{z}" for w, x, y, z in zip(a.tolist(), b.tolist(), cc.tolist(), d.tolist(), strict=True)]


def residential_ips(rng: np.random.Generator, n: int, v6_share: float = 0.0) -> list[str]:
    """Random home/phone addresses (some IPv6)."""
    first = np.array(c.RESIDENTIAL_FIRST_OCTETS)[rng.integers(0, len(c.RESIDENTIAL_FIRST_OCTETS), n)]
    out = ipv4_strings(first, rng.integers(0, 256, n), rng.integers(0, 256, n), rng.integers(1, 255, n))
    if v6_share > 0:
        v6 = np.flatnonzero(rng.random(n) < v6_share)
        groups = rng.integers(0, 65536, (v6.size, 5))
        prefixes = ("2a02", "2600", "2601", "2a01", "2409", "2804", "2003")
        pre = rng.integers(0, len(prefixes), v6.size)
        for j, i in enumerate(v6.tolist()):
            g = groups[j]
            out[i] = f"{prefixes[pre[j]]}:{g[0]:x}:{g[1]:x}:{g[2]:x}::{g[3]:x}:{g[4]:x}"
    return out


def datacenter_slash24s(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    """`n` distinct cloud /24 networks as (a, b, c)."""
    seen: set[tuple[int, int, int]] = set()
    out: list[tuple[int, int, int]] = []
    while len(out) < n:
        a, b = c.DATACENTER_SLASH16[int(rng.integers(len(c.DATACENTER_SLASH16)))]
        net = (a, b, int(rng.integers(0, 256)))
        if net not in seen:
            seen.add(net)
            out.append(net)
    return out


def hosts_in(rng: np.random.Generator, nets: list[tuple[int, int, int]], n: int) -> list[str]:
    """`n` random host addresses spread over the given /24s."""
    k = rng.integers(0, len(nets), n)
    arr = np.array(nets)[k]
    return ipv4_strings(arr[:, 0], arr[:, 1], arr[:, 2], rng.integers(2, 255, n))


def weighted_choice(rng: np.random.Generator, weights: np.ndarray | Sequence[float], n: int) -> np.ndarray:
    """`n` indices drawn with the given (unnormalised) weights."""
    w = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(n), side="right")


def email_shapes(rng: np.random.Generator, n: int) -> list[str]:
    """Shapes of varied personal e-mail local parts (letters `a`, digits `9`)."""
    kind = weighted_choice(rng, [0.3, 0.25, 0.15, 0.15, 0.1, 0.05], n)
    la = rng.integers(3, 9, n)
    lb = rng.integers(3, 11, n)
    nd = rng.integers(1, 5, n)
    out = []
    for k, x, y, d in zip(kind.tolist(), la.tolist(), lb.tolist(), nd.tolist(), strict=True):
        if k == 0:
            out.append("a" * x + "." + "a" * y)
        elif k == 1:
            out.append("a" * (x + 2) + "9" * d)
        elif k == 2:
            out.append("a" * (x + y // 2))
        elif k == 3:
            out.append("a" + "a" * y)
        elif k == 4:
            out.append("a" * x + "_" + "a" * y + ("9" * d if d > 2 else ""))
        else:
            out.append("a" * (x // 2 + 1) + "9" * (d + 2))
    return out


def made_up_domain(rng: np.random.Generator, tlds: tuple[str, ...], syllables: int = 3) -> str:
    """A pronounceable made-up domain name."""
    name = "".join(c.SYLLABLES[int(i)] for i in rng.integers(0, len(c.SYLLABLES), syllables))
    return name + tlds[int(rng.integers(len(tlds)))]
