"""Configuration routes (admin keys only): API keys and KYC webhook endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from api.cursors import MAX_ID
from api.deps import Admin, ServicesDep, SessionDep
from api.routes_triage import CONFLICT, NOT_FOUND
from api.schemas import KeyCreated, KeyIn, KeyOut, WebhookCreated, WebhookIn, WebhookOut
from core.errors import Conflict
from detector import audit, escalations, keys, repository

router = APIRouter()
KeyId = Annotated[int, Path(ge=1, le=MAX_ID, description="API key id.")]
EndpointId = Annotated[int, Path(ge=1, le=MAX_ID, description="Webhook endpoint id.")]


@router.get("/v1/keys", response_model=list[KeyOut], tags=["admin"])
def list_keys(db: SessionDep, _: Admin) -> list[KeyOut]:
    """Every API key, revoked ones included (never the keys themselves)."""
    return [KeyOut.model_validate(k) for k in repository.list_api_keys(session=db)]


@router.post("/v1/keys", response_model=KeyCreated, status_code=201, tags=["admin"])
def create_key(body: Annotated[KeyIn, Body()], svc: ServicesDep, who: Admin) -> KeyCreated:
    """Create a key; the response is the only time the key is shown."""
    with svc.unit_of_work() as session:
        row, token = keys.create_key(body.name, body.scope, session=session)
        audit.record(
            "api_key.create",
            actor=who,
            target_type="api_key",
            target_id=row.id,
            session=session,
            detail={"name": row.name, "scope": row.scope},
        )
        out = KeyCreated(**KeyOut.model_validate(row).model_dump(), key=token)
    return out


@router.delete("/v1/keys/{key_id}", response_model=KeyOut, tags=["admin"], responses={**NOT_FOUND, **CONFLICT})
def revoke_key(key_id: KeyId, svc: ServicesDep, who: Admin) -> KeyOut:
    """Revoke a key (it stays listed, with revoked_at)."""
    if key_id == who.key_id:
        raise Conflict("a key cannot revoke itself: use another admin key")
    with svc.unit_of_work() as session:
        row = keys.revoke_key(key_id, session=session)
        audit.record("api_key.revoke", actor=who, target_type="api_key", target_id=key_id, session=session)
        out = KeyOut.model_validate(row)
    svc.keys.forget(key_id)
    return out


@router.get("/v1/webhooks", response_model=list[WebhookOut], tags=["admin"])
def list_webhooks(db: SessionDep, _: Admin) -> list[WebhookOut]:
    """KYC webhook endpoints (secrets are never shown again)."""
    return [WebhookOut.model_validate(w) for w in repository.list_endpoints(session=db)]


@router.post("/v1/webhooks", response_model=WebhookCreated, status_code=201, tags=["admin"])
def add_webhook(body: Annotated[WebhookIn, Body()], svc: ServicesDep, who: Admin) -> WebhookCreated:
    """Register (or re-activate) an endpoint; the response carries its signing secret, once."""
    with svc.unit_of_work() as session:
        row, secret = escalations.add_endpoint(body.url, session=session, secret=body.secret)
        audit.record(
            "webhook.add", actor=who, target_type="webhook", target_id=row.id, session=session, detail={"url": row.url}
        )
        out = WebhookCreated(**WebhookOut.model_validate(row).model_dump(), secret=secret)
    return out


@router.delete("/v1/webhooks/{endpoint_id}", response_model=WebhookOut, tags=["admin"], responses=NOT_FOUND)
def remove_webhook(endpoint_id: EndpointId, svc: ServicesDep, who: Admin) -> WebhookOut:
    """Deactivate an endpoint: new escalations no longer go to it (queued ones still do)."""
    with svc.unit_of_work() as session:
        row = escalations.deactivate_endpoint(endpoint_id, session=session)
        audit.record(
            "webhook.deactivate",
            actor=who,
            target_type="webhook",
            target_id=row.id,
            session=session,
            detail={"url": row.url},
        )
        out = WebhookOut.model_validate(row)
    return out
