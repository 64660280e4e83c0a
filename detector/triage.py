"""Analyst actions: alert transitions, false-positive suppressions, ring actions, decision overrides.

Every function takes a keyword-only session, writes its audit entry in the same transaction and
never commits (the request boundary does). Each returns the accounts whose decision changed, so
the caller can refresh the decision cache and publish after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from core.errors import BadRequest, Conflict, NotFound
from detector import audit, repository
from detector.decisions import DecisionPolicy, clear_override, set_override, validate_action
from detector.escalations import escalate
from detector.keys import Principal
from detector.models import Alert, Escalation, Suppression

log = logging.getLogger(__name__)

STATUSES = ("open", "acknowledged", "resolved", "false_positive")
# open -> acknowledged -> resolved | false_positive; resolved and false_positive are final
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("acknowledged",),
    "acknowledged": ("resolved", "false_positive"),
    "resolved": (),
    "false_positive": (),
}
RING_ACTIONS = ("throttle", "require_kyc", "block")
FALSE_POSITIVE = "false_positive"


@dataclass
class Outcome:
    """What an action changed: accounts whose decision moved, their KYC escalations (new or still open)."""

    accounts: list[str] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)


def transition_alert(
    alert_id: int,
    to: str,
    *,
    actor: Principal,
    comment: str,
    session: Session,
    policy: DecisionPolicy,
    suppress_days: int = 30,
    now: datetime | None = None,
) -> tuple[Alert, Suppression | None, Outcome]:
    """Move an alert along open -> acknowledged -> resolved | false_positive (409 otherwise)."""
    # a false positive suppresses the account until now + suppress_days (the detector does not
    # re-raise it, its decision is allow until then) and stays on record as a label afterwards
    now = now or datetime.now(UTC)
    if to not in STATUSES:
        raise BadRequest(f"unknown status {to!r}: use one of {', '.join(STATUSES)}")
    alert = repository.get_alert_for_update(alert_id, session=session)
    if alert is None:
        raise NotFound(f"no alert with id {alert_id}")
    allowed = TRANSITIONS[alert.status]
    if to not in allowed:
        hint = f"from {alert.status!r} it can go to {', '.join(allowed)}" if allowed else f"{alert.status!r} is final"
        raise Conflict(f"alert {alert_id} cannot move from {alert.status!r} to {to!r}: {hint}")
    previous = alert.status
    repository.set_alert_status(alert, to, session=session, now=now)
    suppression = None
    outcome = Outcome(accounts=[alert.account_id])
    if to == FALSE_POSITIVE:
        expires = now + timedelta(days=suppress_days)
        suppression = repository.add_suppression(
            {
                "account_id": alert.account_id,
                "alert_id": alert.id,
                "label": FALSE_POSITIVE,
                "actor": actor.name,
                "comment": comment,
                "created_at": now,
                "expires_at": expires,
            },
            session=session,
        )
        # an analyst's or ring's earlier action on the account falls with the verdict
        set_override(
            alert.account_id,
            "allow",
            actor=actor,
            reason=f"false positive (alert {alert.id}): {comment}",
            source="suppression",
            expires_at=expires,
            session=session,
            policy=policy,
            now=now,
        )
    audit.record(
        "alert.transition",
        actor=actor,
        target_type="alert",
        target_id=alert.id,
        session=session,
        comment=comment,
        now=now,
        detail={
            "from": previous,
            "to": to,
            "account_id": alert.account_id,
            **({"suppressed_until": suppression.expires_at.isoformat()} if suppression else {}),
        },
    )
    log.info("alert transition", extra={"alert_id": alert.id, "from": previous, "to": to, "actor": actor.name})
    return alert, suppression, outcome


def act_on_ring(
    ring_id: str,
    action: str,
    *,
    actor: Principal,
    comment: str,
    session: Session,
    policy: DecisionPolicy,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Throttle, escalate to KYC or block every member of a ring at once (suppressed members excepted)."""
    now = now or datetime.now(UTC)
    if action not in RING_ACTIONS:
        raise BadRequest(f"unknown ring action {action!r}: use one of {', '.join(RING_ACTIONS)}")
    if repository.get_ring(ring_id, session=session) is None:
        raise NotFound(f"no ring with id {ring_id}")
    members = repository.ring_members(ring_id, session=session)
    suppressed = repository.suppressed_accounts(members, session=session, now=now)
    targets = [m for m in members if m not in suppressed]
    expires_at = expires_at or now + policy.override_ttl
    outcome = Outcome(accounts=targets)
    for account_id in targets:
        set_override(
            account_id,
            action,
            actor=actor,
            reason=f"ring {ring_id} {action} by {actor.name}: {comment}",
            source="ring_action",
            expires_at=expires_at,
            session=session,
            policy=policy,
            now=now,
        )
        if action == "require_kyc":
            esc, _ = escalate(
                account_id,
                actor=actor,
                reason=f"ring {ring_id}: {comment}",
                ring_id=ring_id,
                session=session,
                now=now,
            )
            outcome.escalations.append(esc)
    audit.record(
        "ring.action",
        actor=actor,
        target_type="ring",
        target_id=ring_id,
        session=session,
        comment=comment,
        now=now,
        detail={
            "action": action,
            "accounts": len(targets),
            "skipped_suppressed": sorted(suppressed),
            "expires_at": expires_at.isoformat(),
            "escalations": [e.id for e in outcome.escalations],
        },
    )
    return outcome


def override_decision(
    account_id: str,
    action: str,
    *,
    actor: Principal,
    comment: str,
    session: Session,
    policy: DecisionPolicy,
    rpm_limit: int | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> Outcome:
    """An analyst's decision for one account; require_kyc also escalates to the KYC provider."""
    now = now or datetime.now(UTC)
    validate_action(action)
    expires_at = expires_at or now + policy.override_ttl
    set_override(
        account_id,
        action,
        actor=actor,
        reason=f"analyst {actor.name}: {comment}",
        source="analyst",
        expires_at=expires_at,
        rpm_limit=rpm_limit,
        session=session,
        policy=policy,
        now=now,
    )
    outcome = Outcome(accounts=[account_id])
    if action == "require_kyc":
        esc, _ = escalate(account_id, actor=actor, reason=comment, session=session, now=now)
        outcome.escalations.append(esc)
    audit.record(
        "decision.override",
        actor=actor,
        target_type="account",
        target_id=account_id,
        session=session,
        comment=comment,
        now=now,
        detail={"action": action, "rpm_limit": rpm_limit, "expires_at": expires_at.isoformat()},
    )
    return outcome


def clear_decision(
    account_id: str, *, actor: Principal, comment: str, session: Session, now: datetime | None = None
) -> Outcome:
    """End an account's override: the detector's decision (or allow) applies again."""
    now = now or datetime.now(UTC)
    if not clear_override(account_id, actor=actor, session=session, now=now):
        raise NotFound(f"account {account_id} has no override in force")
    audit.record(
        "decision.clear",
        actor=actor,
        target_type="account",
        target_id=account_id,
        session=session,
        comment=comment,
        now=now,
    )
    return Outcome(accounts=[account_id])
