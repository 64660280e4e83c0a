"""The platform's routes: per-account decisions (and analysts' overrides), KYC escalations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import Response

from api.cursors import MAX_ID, decode_cursor, encode_cursor
from api.deps import AnyKey, Platform, ServicesDep, SessionDep, Triage, services
from api.routes_triage import CONFLICT, NOT_FOUND, decision_out
from api.schemas import (
    NO_NUL,
    DecisionOut,
    DeliveryOut,
    EscalationDetail,
    EscalationOut,
    EscalationPage,
    OutboxOut,
    OutcomeIn,
    OutcomeOut,
    OverrideIn,
    OverrideOut,
)
from core.errors import BadRequest, NotFound
from detector import escalations, repository, triage

AccountPath = Annotated[str, Path(min_length=1, max_length=128, pattern=NO_NUL, description="Account id.")]
EscalationId = Annotated[int, Path(ge=1, le=MAX_ID, description="Escalation id.")]

router = APIRouter()


@router.get("/v1/decisions/{account_id}", response_model=DecisionOut, tags=["decisions"])
async def get_decision(account_id: AccountPath, request: Request, _: AnyKey) -> Response:
    """The account's decision: action, requests-per-minute limit, reason, expiry (served from memory)."""
    decision = services(request).decisions.get(account_id)
    # the hot path: serialise directly, the shape is DecisionOut by construction
    return Response(orjson.dumps(decision.as_dict()), media_type="application/json")


def _future(name: str, value: datetime | None) -> None:
    if value is None:
        return
    if value.tzinfo is None:
        raise BadRequest(f"{name} must carry a time zone, e.g. 2026-05-01T12:00:00Z")
    if value <= datetime.now(UTC):
        raise BadRequest(f"{name} must be in the future")


@router.put("/v1/decisions/{account_id}", response_model=OverrideOut, tags=["decisions"])
def override_decision(
    account_id: AccountPath, body: Annotated[OverrideIn, Body()], svc: ServicesDep, who: Triage
) -> OverrideOut:
    """An analyst's decision for the account until it expires; require_kyc also opens a KYC escalation."""
    _future("expires_at", body.expires_at)
    if body.action in ("allow", "block") and body.rpm_limit is not None:
        raise BadRequest(f"rpm_limit does not apply to {body.action}: leave it out")
    with svc.unit_of_work() as session:
        outcome = triage.override_decision(
            account_id,
            body.action,
            actor=who,
            comment=body.comment,
            session=session,
            policy=svc.policy,
            rpm_limit=body.rpm_limit,
            expires_at=body.expires_at,
        )
        escalation_id = outcome.escalations[0].id if outcome.escalations else None
    svc.decisions.reload(outcome.accounts)
    return OverrideOut(decision=decision_out(svc.decisions.get(account_id)), escalation_id=escalation_id)


@router.delete("/v1/decisions/{account_id}", response_model=DecisionOut, tags=["decisions"], responses=NOT_FOUND)
def clear_decision(
    account_id: AccountPath,
    svc: ServicesDep,
    who: Triage,
    comment: Annotated[str, Query(min_length=1, max_length=2000, pattern=NO_NUL)] = "cleared",
) -> DecisionOut:
    """End the account's override; the detector's decision (or allow) applies again."""
    with svc.unit_of_work() as session:
        outcome = triage.clear_decision(account_id, actor=who, comment=comment, session=session)
    svc.decisions.reload(outcome.accounts)
    return decision_out(svc.decisions.get(account_id))


@router.get("/v1/escalations", response_model=EscalationPage, tags=["escalations"])
def list_escalations(
    db: SessionDep,
    _: AnyKey,
    status: Literal["open", "verified", "failed"] | None = None,
    account_id: Annotated[str | None, Query(max_length=128, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> EscalationPage:
    """KYC escalations, newest first; cursor-paginated."""
    after = decode_cursor(cursor, "e") if cursor else None
    rows = repository.list_escalations(
        session=db, limit=limit + 1, after_id=after, status=status, account_id=account_id
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return EscalationPage(
        items=[EscalationOut.model_validate(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id, "e") if more and rows else None,
    )


@router.get(
    "/v1/escalations/{escalation_id}", response_model=EscalationDetail, tags=["escalations"], responses=NOT_FOUND
)
def get_escalation(escalation_id: EscalationId, db: SessionDep, _: AnyKey) -> EscalationDetail:
    """One escalation with its webhook messages and every delivery attempt."""
    esc = repository.get_escalation(escalation_id, session=db)
    if esc is None:
        raise NotFound(f"no escalation with id {escalation_id}")
    messages = repository.outbox_of(esc.id, session=db)
    deliveries = repository.deliveries_of([m.id for m in messages], session=db)
    return EscalationDetail(
        **EscalationOut.model_validate(esc).model_dump(),
        messages=[OutboxOut.model_validate(m) for m in messages],
        deliveries=[DeliveryOut.model_validate(d) for d in deliveries],
    )


@router.post(
    "/v1/escalations/{escalation_id}/outcome",
    response_model=OutcomeOut,
    tags=["escalations"],
    responses={**NOT_FOUND, **CONFLICT},
)
def escalation_outcome(
    escalation_id: EscalationId, body: Annotated[OutcomeIn, Body()], svc: ServicesDep, who: Platform
) -> OutcomeOut:
    """The KYC provider reports verified (the account is allowed) or failed (it is blocked)."""
    with svc.unit_of_work() as session:
        esc = escalations.record_outcome(
            escalation_id, body.outcome, actor=who, session=session, policy=svc.policy, comment=body.comment
        )
        esc_out = EscalationOut.model_validate(esc)
    svc.decisions.reload([esc_out.account_id])
    return OutcomeOut(escalation=esc_out, decision=decision_out(svc.decisions.get(esc_out.account_id)))
