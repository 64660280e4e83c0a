"""Event-time detection: per-account state, ticks, scoring, rings and flags.

Events are buffered and consumed tick by tick: when the stream's event time passes a tick
boundary T (multiples of `every`), the events with ts < T update the per-account state, the
accounts are scored and linked, and new flags carry `first_flagged_ts = T`. Because state only
ever changes at tick boundaries and from the same events, the same stream flags the same
accounts at the same event time whatever the batch boundaries were.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core import schema as s
from detector.model import AccountEnsemble
from detector.rings import RING_ID, RING_SIZE, candidate_rings, describe_evidence
from features import volume as v

log = logging.getLogger(__name__)

SCORE = "score"
MODEL_FEATURES = v.VOLUME_FEATURES


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's knobs (a slice of Settings)."""

    every: str = "15m"
    min_account_events: int = 5
    min_population: int = 100
    contamination: float = 0.02
    flag_threshold: float = 0.9
    # an account flagged on its own, with no ring, must be this anomalous and this busy: an odd
    # human with a few dozen requests is not worth an alert, a round-the-clock harvester is
    solo_threshold: float = 0.99
    solo_min_events: int = 500
    min_ring_size: int = 3
    refit_growth: float = 0.25
    refit_every: timedelta = timedelta(hours=6)
    # a redelivered or retried event within this much event time is recognised by its event_id
    dedupe_horizon: timedelta = timedelta(hours=24)
    random_state: int = 42
    model_path: Path | None = None


@dataclass
class Flag:
    """What is known about a flagged account."""

    account_id: str
    first_flagged_ts: datetime
    score: float
    last_scored_ts: datetime
    ring_id: str | None = None
    action: str = "throttle"
    reasons: list[dict[str, Any]] = field(default_factory=list)
    n_events: int = 0

    @property
    def alert_key(self) -> str:
        """Deterministic alert identity: one alert per account per first flag."""
        return f"{self.account_id}@{self.first_flagged_ts.isoformat()}"


@dataclass
class Ring:
    """A candidate ring whose members are flagged."""

    ring_id: str
    members: list[str]
    score: float
    first_flagged_ts: datetime
    evidence: list[str]


@dataclass
class TickOutcome:
    """What one tick changed: accounts newly flagged or re-scored, rings touched."""

    tick: datetime
    n_events: int
    changed: list[Flag]
    rings: list[Ring]


class DetectionEngine:
    """Holds per-account state and runs detection on event-time ticks."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._step = v.duration_of(config.every)
        self.volume_state = v.empty_volume_state().collect()
        self.distinct_state = v.empty_distinct_state().collect()
        self.buffer = pl.DataFrame(schema=s.EVENT_SCHEMA)
        self.next_tick: datetime | None = None
        self.last_tick: datetime | None = None
        self.model: AccountEnsemble | None = None
        self.fitted_at: datetime | None = None
        self.fitted_population = 0
        self.flags: dict[str, Flag] = {}
        self.rings: dict[str, Ring] = {}
        self.first_ts: datetime | None = None
        self.last_ts: datetime | None = None
        self.features: pl.DataFrame | None = None
        self.scores = pl.DataFrame(schema={s.ACCOUNT_ID: pl.String, SCORE: pl.Float64})
        self.seen_ids = pl.DataFrame(schema={s.EVENT_ID: pl.String, s.TS: s.TS_DTYPE})
        self.duplicates = 0
        self._last_suspicious = pl.Series(s.ACCOUNT_ID, [], dtype=pl.String)

    # --- stream interface ---
    def ingest(self, events: pl.DataFrame, *, watermark: datetime | None = None) -> list[TickOutcome]:
        """Buffer validated events and run every tick the watermark has passed.

        The watermark is the event time up to which the input is complete. A single ordered
        file's is its latest event (the default); a multi-partition stream passes the minimum
        over its partitions' latest events, so a lagging partition's events are never late.
        """
        if events.height:
            events = self._drop_duplicates(events)
        if events.height:
            self.buffer = pl.concat([self.buffer, events.select(list(s.EVENT_SCHEMA))])
            lo, hi = events.get_column(s.TS).min(), events.get_column(s.TS).max()
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)  # type: ignore[type-var]
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)  # type: ignore[type-var]
        if self.last_ts is None:
            return []
        if self.next_tick is None:
            self.next_tick = self._next_tick()
        if watermark is None:
            watermark = self.last_ts
        outcomes = []
        while self.next_tick is not None and self.next_tick <= watermark:
            outcomes.append(self._run_tick(self.next_tick))
            self.next_tick = self._next_tick()
        return outcomes

    def add_account_events(self, accounts: pl.DataFrame) -> None:
        """Enrich the linking state with account metadata (payment instrument, signup network, e-mail)."""
        self.distinct_state = v.merge_distinct_state(
            self.distinct_state.lazy(), v.account_links(accounts.lazy())
        ).collect()

    def _drop_duplicates(self, events: pl.DataFrame) -> pl.DataFrame:
        """Keep the first sighting of each event_id (the contract's idempotency key)."""
        n = events.height
        events = events.unique(subset=s.EVENT_ID, keep="first", maintain_order=True)
        if self.seen_ids.height:
            events = events.join(self.seen_ids, on=s.EVENT_ID, how="anti")
        self.duplicates += n - events.height
        self.seen_ids = pl.concat([self.seen_ids, events.select(s.EVENT_ID, s.TS)])
        return events

    def flush(self) -> list[TickOutcome]:
        """End of stream: run the ticks that close the remaining buffered events."""
        outcomes = []
        while (tick := self._next_tick()) is not None:
            outcomes.append(self._run_tick(tick))
        self.next_tick = None
        return outcomes

    def _boundary_after(self, ts: datetime) -> datetime:
        """The first tick boundary strictly after `ts` (ticks are multiples of `every`)."""
        return pl.Series([ts]).dt.truncate(self.config.every).item() + self._step

    def _next_tick(self) -> datetime | None:
        if not self.buffer.height:
            return None
        boundary = self._boundary_after(self.buffer.get_column(s.TS).min())
        # late events (before the last tick) are taken at the next tick, never at a past one
        return boundary if self.last_tick is None else max(boundary, self.last_tick + self._step)

    # --- one tick ---
    def _run_tick(self, tick: datetime) -> TickOutcome:
        self.last_tick = tick
        due = self.buffer.filter(pl.col(s.TS) < tick).sort(s.TS, s.EVENT_ID)
        self.buffer = self.buffer.filter(pl.col(s.TS) >= tick)
        self.seen_ids = self.seen_ids.filter(pl.col(s.TS) >= tick - self.config.dedupe_horizon)
        if due.height == 0:
            return TickOutcome(tick=tick, n_events=0, changed=[], rings=[])
        lf = due.lazy()
        active = due.get_column(s.ACCOUNT_ID).unique()
        partials = v.volume_partials(lf, self.volume_state.lazy(), every=self.config.every)
        self.volume_state = v.merge_volume_state(self.volume_state.lazy(), partials).collect()
        self.distinct_state = v.merge_distinct_state(self.distinct_state.lazy(), v.distinct_partials(lf)).collect()
        # only active accounts' features can have changed: finalise just those
        is_active = pl.col(s.ACCOUNT_ID).is_in(active.implode())
        fresh = (
            v.volume_features(
                self.volume_state.lazy().filter(is_active),
                self.distinct_state.lazy().filter(is_active),
                every=self.config.every,
            )
            .filter(pl.col(v.N_EVENTS) >= self.config.min_account_events)
            .collect()
        )
        base = self.features if self.features is not None else fresh.clear()
        self.features = pl.concat([base.filter(~is_active), fresh]).sort(s.ACCOUNT_ID)
        refitted = self._maybe_fit(tick, self.features)
        changed = self._score(tick, self.features if refitted else fresh, active=active)
        rings = self._link(tick, self.features, force=refitted)
        touched = {f.account_id: f for f in changed}
        for ring in rings:
            for m in ring.members:
                touched[m] = self.flags[m]
        return TickOutcome(tick=tick, n_events=due.height, changed=list(touched.values()), rings=rings)

    def _maybe_fit(self, tick: datetime, eligible: pl.DataFrame) -> bool:
        """Refit on the whole eligible population when it has grown or the model is old."""
        n = eligible.height
        if n < self.config.min_population:
            return False
        stale = (
            self.model is None
            or n >= self.fitted_population * (1 + self.config.refit_growth)
            or (self.fitted_at is not None and tick - self.fitted_at >= self.config.refit_every)
        )
        if not stale:
            return False
        X = eligible.select(MODEL_FEATURES).to_numpy()
        self.model = AccountEnsemble(
            features=MODEL_FEATURES, contamination=self.config.contamination, random_state=self.config.random_state
        ).fit(X)
        self.fitted_at, self.fitted_population = tick, n
        log.info("model fitted", extra={"tick": tick.isoformat(), "accounts": n})
        if self.config.model_path is not None:
            self.model.save(self.config.model_path)
        return True

    def _score(self, tick: datetime, rows: pl.DataFrame, *, active: pl.Series) -> list[Flag]:
        """Score `rows` (the active accounts, or everyone after a refit) and update flags."""
        if self.model is None or rows.height == 0:
            return []
        X = rows.select(MODEL_FEATURES).to_numpy()
        scores = self.model.decision_function(X)
        ids = rows.get_column(s.ACCOUNT_ID)
        self.scores = pl.concat(
            [
                self.scores.filter(~pl.col(s.ACCOUNT_ID).is_in(ids.implode())),
                pl.DataFrame({s.ACCOUNT_ID: ids, SCORE: scores}),
            ]
        )
        id_list = ids.to_list()
        n_events = rows.get_column(v.N_EVENTS).to_numpy()
        active_set = set(active.to_list())
        changed = []
        solo = (scores >= self.config.solo_threshold) & (n_events >= self.config.solo_min_events)
        for i in np.flatnonzero(solo):
            acct = id_list[i]
            if acct not in self.flags:
                flag = self.flags[acct] = Flag(acct, tick, float(scores[i]), tick, n_events=int(n_events[i]))
                flag.reasons = [r.as_dict() for r in self.model.reasons(X[i])]
                changed.append(flag)
        # flagged accounts that were active get their score refreshed
        for i, acct in enumerate(id_list):
            flag = self.flags.get(acct)
            if flag is not None and acct in active_set and flag.last_scored_ts != tick:
                flag.score, flag.last_scored_ts, flag.n_events = float(scores[i]), tick, int(n_events[i])
                changed.append(flag)
        return changed

    def _link(self, tick: datetime, eligible: pl.DataFrame, *, force: bool) -> list[Ring]:
        """Re-run ring linking when the suspicious set changed, after a refit, and hourly (event time)."""
        if self.model is None:
            return []
        suspicious = self.scores.filter(pl.col(SCORE) >= self.config.flag_threshold).get_column(s.ACCOUNT_ID)
        suspicious = pl.concat([suspicious, pl.Series(s.ACCOUNT_ID, list(self.flags), dtype=pl.String)]).unique().sort()
        on_the_hour = tick.minute == 0 and tick.second == 0
        if not (force or on_the_hour or not suspicious.equals(self._last_suspicious)):
            return []
        self._last_suspicious = suspicious
        members, evidence = candidate_rings(self.distinct_state, suspicious, min_size=self.config.min_ring_size)
        if members.height == 0:
            return []
        scored = members.join(self.scores, on=s.ACCOUNT_ID, how="left").join(
            eligible.select(s.ACCOUNT_ID, v.N_EVENTS), on=s.ACCOUNT_ID, how="left"
        )
        X_by_id = dict(zip(eligible.get_column(s.ACCOUNT_ID).to_list(), eligible.select(MODEL_FEATURES).to_numpy(), strict=True))
        rings = []
        for (ring_id,), part in scored.group_by([RING_ID], maintain_order=True):
            ids = part.get_column(s.ACCOUNT_ID).to_list()
            ring_score = float(part.get_column(SCORE).fill_null(0.0).mean() or 0.0)
            # a ring's members act together, so each carries the ring's action
            action = "block" if ring_score >= 0.95 and len(ids) >= 10 else "require_kyc"
            for acct, sc, n in part.select(s.ACCOUNT_ID, SCORE, v.N_EVENTS).iter_rows():
                flag = self.flags.get(acct)
                if flag is None:
                    flag = self.flags[acct] = Flag(acct, tick, float(sc or 0.0), tick)
                    if acct in X_by_id and self.model is not None:
                        flag.reasons = [r.as_dict() for r in self.model.reasons(X_by_id[acct])]
                flag.ring_id, flag.action, flag.n_events = str(ring_id), action, int(n or 0)
            previous = [self.rings[f.ring_id] for f in (self.flags[a] for a in ids) if f.ring_id in self.rings]
            first = min([r.first_flagged_ts for r in previous] + [tick])
            ring = Ring(
                ring_id=str(ring_id), members=sorted(ids), score=ring_score, first_flagged_ts=first,
                evidence=describe_evidence(evidence, str(ring_id)),
            )
            self.rings[ring.ring_id] = ring
            rings.append(ring)
        # rings that merged into others are gone: keep only ids some flag still points to
        live = {f.ring_id for f in self.flags.values() if f.ring_id}
        self.rings = {k: r for k, r in self.rings.items() if k in live}
        return rings
