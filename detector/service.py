"""Turn detection outcomes into stored alerts and rings (no commit: the batch boundary commits)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from detector import audit, repository
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


def activity_row(flag: Flag, *, now: datetime) -> dict[str, Any]:
    """The account_activity row of a flag: its latest score and event count in that event-time hour."""
    return {
        "account_id": flag.account_id,
        "hour": flag.last_scored_ts.replace(minute=0, second=0, microsecond=0),
        "score": round(flag.score, 6),
        "n_events": flag.n_events,
        "ring_id": flag.ring_id,
        "action": flag.action,
        "updated_at": now,
    }


def record_outcomes(outcomes: Iterable[TickOutcome], *, session: Session, now: datetime | None = None) -> int:
    """Store what the ticks changed: alerts upserted by key, rings replaced; returns alerts written."""
    now = now or datetime.now(UTC)
    flags: dict[str, Flag] = {}
    rings: dict[str, Ring] = {}
    dissolved: set[str] = set()
    for outcome in outcomes:
        for flag in outcome.changed:
            flags[flag.alert_key] = flag
        for ring in outcome.rings:
            rings[ring.ring_id] = ring
            dissolved.discard(ring.ring_id)
        for ring_id in outcome.dissolved:
            rings.pop(ring_id, None)
            dissolved.add(ring_id)
    # an analyst's false positive holds until its suppression expires: no update, no new alert
    suppressed = repository.suppressed_accounts((f.account_id for f in flags.values()), session=session, now=now)
    live = [f for f in flags.values() if f.account_id not in suppressed]
    repository.upsert_alerts([alert_row(f, now=now) for f in live], session=session)
    # flagged again after the suppression lapsed: back to the analysts (the label stays on record)
    for alert in repository.reopen_false_positives([f.alert_key for f in live], session=session, now=now):
        audit.record(
            "alert.reopen",
            actor=audit.DETECTOR,
            target_type="alert",
            target_id=alert.id,
            session=session,
            comment="flagged again after its suppression expired",
            now=now,
        )
    repository.upsert_rings([ring_row(r, now=now) for r in rings.values()], session=session)
    # a ring whose members merged into another or dispersed is gone, as in the report
    repository.delete_rings(sorted(dissolved), session=session)
    activity = {(r["account_id"], r["hour"]): r for r in (activity_row(f, now=now) for f in flags.values())}
    repository.upsert_activity(list(activity.values()), session=session)
    return len(live)
