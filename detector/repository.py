"""All SQL of the detector's tables. Functions take a keyword-only session and never commit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from detector.models import (
    AccountActivity,
    Alert,
    ApiKey,
    AuditEntry,
    DecisionOverride,
    Escalation,
    Ring,
    RingMember,
    Suppression,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutbox,
)


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
    updated = {
        c: stmt.excluded[c]
        for c in ("ring_id", "score", "severity", "action", "last_scored_ts", "n_events", "reasons", "updated_at")
    }
    # one statement with a list of parameter sets: compiled once (cached), sent as batched
    # multi-row inserts by the driver layer; a VALUES list per call recompiled 500 rows each time
    session.execute(stmt.on_conflict_do_update(index_elements=["alert_key"], set_=updated), list(rows))


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
            session.execute(
                _insert(session, RingMember.__table__)
                .values([{"ring_id": ring["ring_id"], "account_id": m} for m in members])
                .on_conflict_do_nothing()
            )


@dataclass(frozen=True)
class AlertFilter:
    """Filters of the alert list; None means any."""

    status: str | None = None
    severity: str | None = None
    ring_id: str | None = None
    account_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _filtered(f: AlertFilter) -> Select[Any]:
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
    q = select(RingMember.account_id).where(RingMember.ring_id == ring_id).order_by(RingMember.account_id)
    return list(session.scalars(q))


def get_ring(ring_id: str, *, session: Session) -> Ring | None:
    """One ring by id."""
    return session.get(Ring, ring_id)


# --- account activity (the alert timeline) ---


def upsert_activity(rows: Sequence[dict[str, Any]], *, session: Session) -> None:
    """Insert or refresh per-account per-hour observations (the latest tick of the hour wins)."""
    if not rows:
        return
    stmt = _insert(session, AccountActivity.__table__)
    updated = {c: stmt.excluded[c] for c in ("score", "n_events", "ring_id", "action", "updated_at")}
    session.execute(stmt.on_conflict_do_update(index_elements=["account_id", "hour"], set_=updated), list(rows))


def account_activity(account_id: str, *, session: Session, limit: int = 24 * 31) -> list[AccountActivity]:
    """An account's hourly observations, oldest first (the most recent `limit` hours)."""
    rows = session.scalars(
        select(AccountActivity)
        .where(AccountActivity.account_id == account_id)
        .order_by(AccountActivity.hour.desc())
        .limit(limit)
    )
    return list(reversed(list(rows)))


# --- triage: alert status, suppressions ---


def get_alert_for_update(alert_id: int, *, session: Session) -> Alert | None:
    """One alert, row-locked until the transaction ends (two analysts cannot both move it)."""
    return session.scalars(select(Alert).where(Alert.id == alert_id).with_for_update()).first()


def set_alert_status(alert: Alert, status: str, *, session: Session, now: datetime) -> None:
    """Move an alert to `status`."""
    alert.status = status
    alert.updated_at = now
    session.flush()


def alerts_of_ring(ring_id: str, *, session: Session) -> list[Alert]:
    """Alerts of a ring's members (by current ring membership), one per account, newest first."""
    members = select(RingMember.account_id).where(RingMember.ring_id == ring_id)
    rows = session.scalars(select(Alert).where(Alert.account_id.in_(members)).order_by(Alert.id.desc()))
    seen: dict[str, Alert] = {}
    for row in rows:
        seen.setdefault(row.account_id, row)
    return sorted(seen.values(), key=lambda a: a.account_id)


def add_suppression(row: dict[str, Any], *, session: Session) -> Suppression:
    """Record a false-positive suppression (the row is kept after expiry as the label)."""
    sup = Suppression(**row)
    session.add(sup)
    session.flush()
    return sup


def suppressions_of(account_id: str, *, session: Session) -> list[Suppression]:
    """Every suppression (label) of an account, newest first."""
    q = select(Suppression).where(Suppression.account_id == account_id).order_by(Suppression.id.desc())
    return list(session.scalars(q))


def suppressed_accounts(account_ids: Iterable[str], *, session: Session, now: datetime) -> set[str]:
    """Which of `account_ids` have a suppression in force at `now`."""
    ids = list(set(account_ids))
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(
            session.scalars(
                select(Suppression.account_id)
                .where(Suppression.account_id.in_(chunk), Suppression.expires_at > now)
                .distinct()
            )
        )
    return found


def reopen_false_positives(alert_keys: Iterable[str], *, session: Session, now: datetime) -> list[Alert]:
    """Re-open false-positive alerts among `alert_keys` (their suppression has lapsed; the label stays)."""
    keys = list(set(alert_keys))
    reopened: list[Alert] = []
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = session.scalars(
            select(Alert).where(Alert.alert_key.in_(chunk), Alert.status == "false_positive").with_for_update()
        )
        for alert in rows:
            alert.status, alert.updated_at = "open", now
            reopened.append(alert)
    session.flush()
    return reopened


# --- audit log ---


def add_audit(row: dict[str, Any], *, session: Session) -> AuditEntry:
    """Append one audit entry."""
    entry = AuditEntry(**row)
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class AuditFilter:
    """Filters of the audit log; None means any."""

    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None


def list_audit(f: AuditFilter, *, session: Session, limit: int, after_id: int | None = None) -> list[AuditEntry]:
    """Audit entries matching the filter, newest first, after a cursor (exclusive)."""
    q = select(AuditEntry)
    if f.actor:
        q = q.where(AuditEntry.actor == f.actor)
    if f.action:
        q = q.where(AuditEntry.action == f.action)
    if f.target_type:
        q = q.where(AuditEntry.target_type == f.target_type)
    if f.target_id:
        q = q.where(AuditEntry.target_id == f.target_id)
    if after_id is not None:
        q = q.where(AuditEntry.id < after_id)
    return list(session.scalars(q.order_by(AuditEntry.id.desc()).limit(limit)))


def audit_of(target_type: str, target_id: str, *, session: Session) -> list[AuditEntry]:
    """Audit entries about one object, oldest first."""
    q = select(AuditEntry).where(AuditEntry.target_type == target_type, AuditEntry.target_id == target_id)
    return list(session.scalars(q.order_by(AuditEntry.id)))


# --- decisions ---


def upsert_override(row: dict[str, Any], *, session: Session) -> None:
    """Set an account's override decision (one per account; the latest replaces the previous)."""
    stmt = _insert(session, DecisionOverride.__table__).values(**row)
    cols = ("action", "rpm_limit", "reason", "source", "actor", "expires_at", "updated_at")
    session.execute(stmt.on_conflict_do_update(index_elements=["account_id"], set_={c: stmt.excluded[c] for c in cols}))


def get_override(account_id: str, *, session: Session) -> DecisionOverride | None:
    """An account's override decision, expired or not."""
    return session.get(DecisionOverride, account_id)


def overrides_changed_since(since: datetime | None, *, session: Session) -> list[DecisionOverride]:
    """Overrides changed after `since` (all when None)."""
    q = select(DecisionOverride)
    if since is not None:
        q = q.where(DecisionOverride.updated_at > since)
    return list(session.scalars(q))


def overrides_of(account_ids: Sequence[str], *, session: Session) -> list[DecisionOverride]:
    """Overrides of some accounts."""
    out: list[DecisionOverride] = []
    for start in range(0, len(account_ids), 500):
        chunk = list(account_ids[start : start + 500])
        out.extend(session.scalars(select(DecisionOverride).where(DecisionOverride.account_id.in_(chunk))))
    return out


_DECISION_COLS = (
    Alert.id,
    Alert.account_id,
    Alert.status,
    Alert.action,
    Alert.score,
    Alert.severity,
    Alert.ring_id,
    Alert.updated_at,
)


def alert_decisions_changed_since(since: datetime | None, *, session: Session) -> list[Any]:
    """The decision-relevant columns of alerts changed after `since` (all when None)."""
    q = select(*_DECISION_COLS)
    if since is not None:
        q = q.where(Alert.updated_at > since)
    return list(session.execute(q.order_by(Alert.id)))


def alert_decisions_of(account_ids: Sequence[str], *, session: Session) -> list[Any]:
    """The decision-relevant columns of some accounts' alerts."""
    out: list[Any] = []
    for start in range(0, len(account_ids), 500):
        chunk = list(account_ids[start : start + 500])
        out.extend(session.execute(select(*_DECISION_COLS).where(Alert.account_id.in_(chunk)).order_by(Alert.id)))
    return out


# --- API keys ---


def add_api_key(row: dict[str, Any], *, session: Session) -> ApiKey:
    """Store a new key (its hash only)."""
    key = ApiKey(**row)
    session.add(key)
    session.flush()
    return key


def api_key_by_hash(key_hash: str, *, session: Session) -> ApiKey | None:
    """The key with this SHA-256, revoked or not."""
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def list_api_keys(*, session: Session, include_revoked: bool = True) -> list[ApiKey]:
    """All keys, oldest first."""
    q = select(ApiKey)
    if not include_revoked:
        q = q.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(q.order_by(ApiKey.id)))


def get_api_key(key_id: int, *, session: Session) -> ApiKey | None:
    """One key by id."""
    return session.get(ApiKey, key_id)


def revoke_api_key(key: ApiKey, *, session: Session, now: datetime) -> None:
    """Revoke a key (kept for the audit trail)."""
    key.revoked_at = now
    session.flush()


# --- webhook endpoints ---


def upsert_endpoint(row: dict[str, Any], *, session: Session) -> WebhookEndpoint:
    """Insert an endpoint, or update the secret and re-activate one with the same URL."""
    stmt = _insert(session, WebhookEndpoint.__table__).values(**row)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["url"], set_={c: stmt.excluded[c] for c in ("secret", "active", "source")}
        )
    )
    endpoint = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.url == row["url"])).one()
    session.refresh(endpoint)
    return endpoint


def list_endpoints(*, session: Session, active_only: bool = False) -> list[WebhookEndpoint]:
    """Webhook endpoints, oldest first."""
    q = select(WebhookEndpoint)
    if active_only:
        q = q.where(WebhookEndpoint.active.is_(True))
    return list(session.scalars(q.order_by(WebhookEndpoint.id)))


def get_endpoint(endpoint_id: int, *, session: Session) -> WebhookEndpoint | None:
    """One endpoint by id."""
    return session.get(WebhookEndpoint, endpoint_id)


def set_endpoint_active(endpoint: WebhookEndpoint, active: bool, *, session: Session) -> None:
    """Activate or deactivate an endpoint (deliveries already queued still go out)."""
    endpoint.active = active
    session.flush()


# --- escalations and their outbox ---


def open_escalation_of(account_id: str, *, session: Session) -> Escalation | None:
    """The account's escalation still waiting for an outcome, if any."""
    q = select(Escalation).where(Escalation.account_id == account_id, Escalation.status == "open")
    return session.scalars(q.order_by(Escalation.id.desc())).first()


def add_escalation(row: dict[str, Any], *, session: Session) -> Escalation:
    """Store an escalation (its outbox messages follow in the same transaction)."""
    esc = Escalation(**row)
    session.add(esc)
    session.flush()
    return esc


def add_outbox(row: dict[str, Any], *, session: Session) -> WebhookOutbox:
    """Queue one message for one endpoint."""
    message = WebhookOutbox(**row)
    session.add(message)
    session.flush()
    return message


def get_escalation(escalation_id: int, *, session: Session, for_update: bool = False) -> Escalation | None:
    """One escalation by id (row-locked when `for_update`)."""
    q = select(Escalation).where(Escalation.id == escalation_id)
    if for_update:
        q = q.with_for_update()
    return session.scalars(q).first()


def list_escalations(
    *,
    session: Session,
    limit: int,
    after_id: int | None = None,
    status: str | None = None,
    account_id: str | None = None,
) -> list[Escalation]:
    """Escalations, newest first, after a cursor (exclusive)."""
    q = select(Escalation)
    if status:
        q = q.where(Escalation.status == status)
    if account_id:
        q = q.where(Escalation.account_id == account_id)
    if after_id is not None:
        q = q.where(Escalation.id < after_id)
    return list(session.scalars(q.order_by(Escalation.id.desc()).limit(limit)))


def resolve_escalation(esc: Escalation, status: str, *, session: Session, now: datetime, comment: str | None) -> None:
    """Record the provider's outcome."""
    esc.status, esc.resolved_at, esc.outcome_comment = status, now, comment
    session.flush()


def outbox_of(escalation_id: int, *, session: Session) -> list[WebhookOutbox]:
    """Outbox messages of one escalation."""
    q = select(WebhookOutbox).where(WebhookOutbox.escalation_id == escalation_id).order_by(WebhookOutbox.id)
    return list(session.scalars(q))


def deliveries_of(outbox_ids: Sequence[int], *, session: Session) -> list[WebhookDelivery]:
    """Delivery-log rows of some outbox messages, oldest first."""
    if not outbox_ids:
        return []
    q = select(WebhookDelivery).where(WebhookDelivery.outbox_id.in_(list(outbox_ids)))
    return list(session.scalars(q.order_by(WebhookDelivery.id)))


def due_outbox_ids(*, session: Session, now: datetime, limit: int) -> list[int]:
    """Pending messages whose next attempt is due and that no worker holds."""
    q = (
        select(WebhookOutbox.id)
        .where(
            WebhookOutbox.status == "pending",
            WebhookOutbox.next_attempt_at <= now,
            or_(WebhookOutbox.locked_until.is_(None), WebhookOutbox.locked_until < now),
        )
        .order_by(WebhookOutbox.next_attempt_at, WebhookOutbox.id)
        .limit(limit)
    )
    return list(session.scalars(q))


def claim_outbox(outbox_id: int, *, session: Session, now: datetime, until: datetime) -> bool:
    """Take a lease on one message; False when another worker holds it, or it is no longer pending or due."""
    result = session.execute(
        update(WebhookOutbox)
        .where(
            WebhookOutbox.id == outbox_id,
            WebhookOutbox.status == "pending",
            # re-checked here: another worker may have attempted it since this one listed it as due
            WebhookOutbox.next_attempt_at <= now,
            or_(WebhookOutbox.locked_until.is_(None), WebhookOutbox.locked_until < now),
        )
        .values(locked_until=until)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def outbox_message(outbox_id: int, *, session: Session) -> tuple[WebhookOutbox, WebhookEndpoint] | None:
    """A message with the endpoint it goes to."""
    row = session.execute(
        select(WebhookOutbox, WebhookEndpoint)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookOutbox.endpoint_id)
        .where(WebhookOutbox.id == outbox_id)
    ).first()
    return None if row is None else (row[0], row[1])


def finish_attempt(
    outbox_id: int, *, session: Session, lease: datetime, values: dict[str, Any], log: dict[str, Any]
) -> bool:
    """Record an attempt's result, only if this worker's lease still holds; logs the attempt either way."""
    result = session.execute(
        update(WebhookOutbox)
        .where(WebhookOutbox.id == outbox_id, WebhookOutbox.status == "pending", WebhookOutbox.locked_until == lease)
        .values(**values, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    session.add(WebhookDelivery(outbox_id=outbox_id, **log))
    session.flush()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def outbox_counts(*, session: Session) -> dict[str, int]:
    """How many outbox messages are in each status."""
    rows = session.execute(select(WebhookOutbox.status, func.count()).group_by(WebhookOutbox.status))
    return {status: int(n) for status, n in rows}


def delete_rings(ring_ids: Sequence[str], *, session: Session) -> None:
    """Remove rings (and their memberships) that no longer exist."""
    if ring_ids:
        session.execute(delete(RingMember).where(RingMember.ring_id.in_(list(ring_ids))))
        session.execute(delete(Ring).where(Ring.ring_id.in_(list(ring_ids))))
