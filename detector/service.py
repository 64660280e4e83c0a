"""Turn detection outcomes into stored alerts and rings (no commit: the batch boundary commits)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from detector import repository
from detector.engine import Flag, Ring, TickOutcome


def severity_of(score: float) -> str:
    """Severity bands of the combined score."""
    if score >= 0.98:
        return "critical"
    if score >= 0.95:
        return "high"
    if score >= 0.9:
        return "medium"
    return "low"


def alert_row(flag: Flag, *, now: datetime) -> dict[str, Any]:
    """The alerts-table row of a flag."""
    return {
        "alert_key": flag.alert_key,
        "account_id": flag.account_id,
        "ring_id": flag.ring_id,
        "score": round(flag.score, 6),
        "severity": severity_of(flag.score),
        "status": "open",
        "action": flag.action,
        "first_flagged_ts": flag.first_flagged_ts,
        "last_scored_ts": flag.last_scored_ts,
        "n_events": flag.n_events,
        "reasons": flag.reasons,
        "created_at": now,
        "updated_at": now,
    }


def ring_row(ring: Ring, *, now: datetime) -> dict[str, Any]:
    """The rings-table row of a ring (with its members, split off by the repository)."""
    return {
        "ring_id": ring.ring_id,
        "size": len(ring.members),
        "score": round(ring.score, 6),
        "first_flagged_ts": ring.first_flagged_ts,
        "evidence": ring.evidence,
        "members": list(ring.members),
        "created_at": now,
        "updated_at": now,
    }


def record_outcomes(outcomes: Iterable[TickOutcome], *, session: Session, now: datetime | None = None) -> int:
    """Store what the ticks changed: alerts upserted by key, rings replaced; returns alerts written."""
    now = now or datetime.now(UTC)
    flags: dict[str, Flag] = {}
    rings: dict[str, Ring] = {}
    for outcome in outcomes:
        for flag in outcome.changed:
            flags[flag.alert_key] = flag
        for ring in outcome.rings:
            rings[ring.ring_id] = ring
    repository.upsert_alerts([alert_row(f, now=now) for f in flags.values()], session=session)
    repository.upsert_rings([ring_row(r, now=now) for r in rings.values()], session=session)
    return len(flags)
