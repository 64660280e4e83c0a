"""All SQL of the detector's tables. Functions take a keyword-only session and never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from detector.models import Alert, Ring, RingMember


def _insert(session: Session, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT on the session's backend."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database backend: {name}")


def upsert_alerts(rows: Sequence[dict[str, Any]], *, session: Session) -> None:
    """Insert alerts or refresh detector-owned fields of existing ones (keyed by alert_key).

    Triage fields (status) are never overwritten: an analyst's decision outlives re-scoring.
    """
    if not rows:
        return
    stmt = _insert(session, Alert.__table__)
    updated = {c: stmt.excluded[c] for c in ("ring_id", "score", "severity", "action", "last_scored_ts",
                                              "n_events", "reasons", "updated_at")}
    # chunks keep each statement under the backends' bound-parameter limits
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        session.execute(stmt.values(list(chunk)).on_conflict_do_update(index_elements=["alert_key"], set_=updated))


def upsert_rings(rings: Sequence[dict[str, Any]], *, session: Session) -> None:
    """Insert or refresh rings and replace their member lists."""
    for ring in rings:
        members = ring.pop("members")
        stmt = _insert(session, Ring.__table__).values(**ring)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["ring_id"],
                set_={c: stmt.excluded[c] for c in ("size", "score", "first_flagged_ts", "evidence", "updated_at")},
            )
        )
        session.execute(delete(RingMember).where(RingMember.ring_id == ring["ring_id"]))
        if members:
            session.execute(_insert(session, RingMember.__table__).values(
                [{"ring_id": ring["ring_id"], "account_id": m} for m in members]
            ).on_conflict_do_nothing())


@dataclass(frozen=True)
class AlertFilter:
    """Filters of the alert list; None means any."""

    status: str | None = None
    severity: str | None = None
    ring_id: str | None = None
    account_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(f: AlertFilter) -> Select[tuple[Alert]]:
    q = select(Alert)
    if f.status:
        q = q.where(Alert.status == f.status)
    if f.severity:
        q = q.where(Alert.severity == f.severity)
    if f.ring_id:
        q = q.where(Alert.ring_id == f.ring_id)
    if f.account_id:
        q = q.where(Alert.account_id == f.account_id)
    if f.since:
        q = q.where(Alert.first_flagged_ts >= f.since)
    if f.until:
        q = q.where(Alert.first_flagged_ts < f.until)
    return q


def list_alerts(f: AlertFilter, *, session: Session, limit: int, after_id: int | None = None) -> list[Alert]:
    """Alerts matching the filter, newest id first, after a cursor (exclusive)."""
    q = _filtered(f)
    if after_id is not None:
        q = q.where(Alert.id < after_id)
    return list(session.scalars(q.order_by(Alert.id.desc()).limit(limit)))


def count_alerts(f: AlertFilter, *, session: Session) -> int:
    """How many alerts match the filter."""
    return int(session.scalar(select(func.count()).select_from(_filtered(f).subquery())) or 0)


def get_alert(alert_id: int, *, session: Session) -> Alert | None:
    """One alert by id."""
    return session.get(Alert, alert_id)


def list_rings(*, session: Session) -> list[Ring]:
    """All rings, highest score first."""
    return list(session.scalars(select(Ring).order_by(Ring.score.desc(), Ring.ring_id)))


def ring_members(ring_id: str, *, session: Session) -> list[str]:
    """Account ids of one ring."""
    return list(session.scalars(select(RingMember.account_id).where(RingMember.ring_id == ring_id).order_by(RingMember.account_id)))


def get_ring(ring_id: str, *, session: Session) -> Ring | None:
    """One ring by id."""
    return session.get(Ring, ring_id)
