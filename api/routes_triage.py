"""The security team's routes: alerts and their transitions, rings and ring actions, the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from sqlalchemy.orm import Session

from api.cursors import MAX_ID, decode_cursor, encode_cursor
from api.deps import AnyKey, ServicesDep, SessionDep, Triage
from api.schemas import (
    NO_NUL,
    ActivityPoint,
    AlertDetail,
    AlertOut,
    AlertPage,
    AuditOut,
    AuditPage,
    DecisionOut,
    MemberOut,
    Problem,
    RingActionIn,
    RingActionOut,
    RingDetail,
    RingOut,
    SuppressionOut,
    Timestamp,
    TransitionIn,
    TransitionOut,
)
from core.errors import BadRequest, NotFound
from detector import repository, triage
from detector.decisions import Decision
from detector.models import Suppression

Severity = Literal["low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "resolved", "false_positive"]
AlertId = Annotated[int, Path(ge=1, le=MAX_ID, description="Alert id.")]
RingId = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL, description="Ring id.")]

router = APIRouter()
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such object"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "Not allowed in the object's current state"}
}


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise BadRequest(f"{name} must carry a time zone, e.g. 2026-05-01T12:00:00Z")


def decision_out(d: Decision) -> DecisionOut:
    """The API form of a cached decision."""
    return DecisionOut.model_validate(d.as_dict())


def suppression_out(row: Suppression, now: datetime) -> SuppressionOut:
    """A suppression with whether it is in force."""
    out = SuppressionOut.model_validate(row)
    out.active = row.expires_at > now
    return out


@router.get("/v1/alerts", response_model=AlertPage, tags=["alerts"])
def list_alerts(
    db: SessionDep,
    _: AnyKey,
    status: Status | None = None,
    severity: Severity | None = None,
    ring_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    account_id: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    since: Annotated[Timestamp | None, Query(description="first_flagged_ts >= since (RFC 3339)")] = None,
    until: Annotated[Timestamp | None, Query(description="first_flagged_ts < until (RFC 3339)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AlertPage:
    """Alerts, newest first, filtered; cursor-paginated."""
    _aware("since", since)
    _aware("until", until)
    f = repository.AlertFilter(
        status=status, severity=severity, ring_id=ring_id, account_id=account_id, since=since, until=until
    )
    after = decode_cursor(cursor) if cursor else None
    rows = repository.list_alerts(f, session=db, limit=limit + 1, after_id=after)
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertPage(
        items=[AlertOut.model_validate(r) for r in rows],
        total=repository.count_alerts(f, session=db),
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
    )


def _timeline(account_id: str, db: Session) -> list[ActivityPoint]:
    points, previous = [], None
    for row in repository.account_activity(account_id, session=db):
        new = row.n_events - previous if previous is not None else row.n_events
        points.append(
            ActivityPoint(
                hour=row.hour,
                score=row.score,
                n_events=row.n_events,
                new_events=max(new, 0),
                ring_id=row.ring_id,
                action=row.action,
            )
        )
        previous = row.n_events
    return points


@router.get("/v1/alerts/{alert_id}", response_model=AlertDetail, tags=["alerts"], responses=NOT_FOUND)
def get_alert(alert_id: AlertId, db: SessionDep, svc: ServicesDep, _: AnyKey) -> AlertDetail:
    """One alert with its reasons, its ring's evidence, the account's timeline, history and decision."""
    row = repository.get_alert(alert_id, session=db)
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    ring = repository.get_ring(row.ring_id, session=db) if row.ring_id else None
    now = datetime.now(UTC)
    return AlertDetail(
        **AlertOut.model_validate(row).model_dump(),
        ring_size=ring.size if ring else None,
        ring_evidence=list(ring.evidence) if ring else [],
        timeline=_timeline(row.account_id, db),
        history=[AuditOut.model_validate(a) for a in repository.audit_of("alert", str(row.id), session=db)],
        labels=[suppression_out(s, now) for s in repository.suppressions_of(row.account_id, session=db)],
        decision=decision_out(svc.decisions.get(row.account_id, now)),
        allowed_transitions=list(triage.TRANSITIONS[row.status]) if row.status in triage.TRANSITIONS else [],
    )


@router.post(
    "/v1/alerts/{alert_id}/transitions",
    response_model=TransitionOut,
    tags=["alerts"],
    responses={**NOT_FOUND, **CONFLICT},
)
def transition_alert(
    alert_id: AlertId, body: Annotated[TransitionIn, Body()], svc: ServicesDep, who: Triage
) -> TransitionOut:
    """Move an alert: open -> acknowledged -> resolved | false_positive (a false positive suppresses the account)."""
    if body.suppress_days is not None and body.status != "false_positive":
        raise BadRequest("suppress_days applies only to a false_positive transition")
    with svc.unit_of_work() as session:
        alert, suppression, outcome = triage.transition_alert(
            alert_id,
            body.status,
            actor=who,
            comment=body.comment,
            session=session,
            policy=svc.policy,
            suppress_days=body.suppress_days or svc.settings.suppression_days,
        )
        alert_out = AlertOut.model_validate(alert)
        sup_out = suppression_out(suppression, datetime.now(UTC)) if suppression else None
    svc.decisions.reload(outcome.accounts)
    return TransitionOut(
        alert=alert_out, suppression=sup_out, decision=decision_out(svc.decisions.get(alert_out.account_id))
    )


@router.get("/v1/rings", response_model=list[RingOut], tags=["rings"])
def list_rings(db: SessionDep, _: AnyKey) -> list[RingOut]:
    """Rings, highest score first."""
    return [RingOut.model_validate(r) for r in repository.list_rings(session=db)]


@router.get("/v1/rings/{ring_id}", response_model=RingDetail, tags=["rings"], responses=NOT_FOUND)
def get_ring(ring_id: RingId, db: SessionDep, svc: ServicesDep, _: AnyKey) -> RingDetail:
    """One ring with its members, their alerts and decisions, and the shared evidence."""
    ring = repository.get_ring(ring_id, session=db)
    if ring is None:
        raise NotFound(f"no ring with id {ring_id}")
    members = repository.ring_members(ring_id, session=db)
    alerts = {a.account_id: a for a in repository.alerts_of_ring(ring_id, session=db)}
    details = []
    for account_id in members:
        a = alerts.get(account_id)
        d = svc.decisions.get(account_id)
        details.append(
            MemberOut(
                account_id=account_id,
                alert_id=a.id if a else None,
                status=a.status if a else None,
                severity=a.severity if a else None,
                score=a.score if a else None,
                action=d.action,
                decision_source=d.source,
            )
        )
    return RingDetail(**RingOut.model_validate(ring).model_dump(), members=members, member_alerts=details)


@router.post("/v1/rings/{ring_id}/actions", response_model=RingActionOut, tags=["rings"], responses=NOT_FOUND)
def act_on_ring(ring_id: RingId, body: Annotated[RingActionIn, Body()], svc: ServicesDep, who: Triage) -> RingActionOut:
    """Throttle, escalate to KYC, or block every member of a ring (members suppressed as false positives excepted)."""
    _aware("expires_at", body.expires_at)
    now = datetime.now(UTC)
    expires_at = body.expires_at or now + svc.policy.override_ttl
    with svc.unit_of_work() as session:
        outcome = triage.act_on_ring(
            ring_id,
            body.action,
            actor=who,
            comment=body.comment,
            session=session,
            policy=svc.policy,
            expires_at=expires_at,
            now=now,
        )
        members = repository.ring_members(ring_id, session=session)
        escalation_ids = [e.id for e in outcome.escalations]
    svc.decisions.reload(outcome.accounts)
    return RingActionOut(
        ring_id=ring_id,
        action=body.action,
        accounts=outcome.accounts,
        skipped_suppressed=sorted(set(members) - set(outcome.accounts)),
        escalation_ids=escalation_ids,
        expires_at=expires_at,
    )


@router.get("/v1/audit", response_model=AuditPage, tags=["audit"])
def list_audit(
    db: SessionDep,
    _: Triage,
    actor: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    action: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    target_type: Literal["alert", "ring", "account", "escalation", "api_key", "webhook"] | None = None,
    target_id: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    """Every analyst and administrator action, newest first; cursor-paginated."""
    f = repository.AuditFilter(actor=actor, action=action, target_type=target_type, target_id=target_id)
    after = decode_cursor(cursor, "l") if cursor else None
    rows = repository.list_audit(f, session=db, limit=limit + 1, after_id=after)
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(
        items=[AuditOut.model_validate(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id, "l") if more and rows else None,
    )
