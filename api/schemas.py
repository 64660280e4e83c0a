"""Response and request bodies of the API."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _rfc3339_only(value: object) -> object:
    """Refuse what pydantic would otherwise take for a time: numbers (Unix seconds), bare dates."""
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time, e.g. 2026-05-01T12:00:00Z")


# a date-time in input: the OpenAPI type is a date-time string, so nothing else may pass
Timestamp = Annotated[datetime, BeforeValidator(_rfc3339_only)]


class ReasonOut(BaseModel):
    """Why an account was flagged: a feature, its value and the population baseline."""

    feature: str
    value: float
    baseline: float | None = None
    detail: str = ""


class AlertOut(BaseModel):
    """One alert."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: str
    ring_id: str | None
    score: float = Field(description="Combined anomaly score in [0, 1]; higher = more anomalous.")
    severity: str
    status: str
    action: str
    first_flagged_ts: datetime = Field(description="Event time at which the account was first flagged.")
    last_scored_ts: datetime
    n_events: int
    reasons: list[ReasonOut]
    created_at: datetime
    updated_at: datetime


class AlertPage(BaseModel):
    """A page of alerts; pass `next_cursor` as `cursor` to get the next one."""

    items: list[AlertOut]
    total: int
    next_cursor: str | None


class RingOut(BaseModel):
    """A ring of linked flagged accounts."""

    model_config = ConfigDict(from_attributes=True)

    ring_id: str
    size: int
    score: float
    first_flagged_ts: datetime
    evidence: list[str]


class MemberOut(BaseModel):
    """A ring member with its latest alert and the decision in force."""

    account_id: str
    alert_id: int | None
    status: str | None
    severity: str | None
    score: float | None
    action: str = Field(description="The decision in force for the account now.")
    decision_source: str


class RingDetail(RingOut):
    """A ring with its members and their alerts."""

    members: list[str]
    member_alerts: list[MemberOut] = Field(default_factory=list)


class Health(BaseModel):
    """Liveness and database reachability."""

    status: str
    database: str
    schema_revision: str | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None


# PostgreSQL text cannot hold NUL: refused as bad input (in the schema, so clients see it)
NO_NUL = r"^[^\x00]*$"
Comment = Annotated[str, Field(min_length=1, max_length=2000, pattern=NO_NUL)]
OptionalComment = Annotated[str, Field(max_length=2000, pattern=NO_NUL)]
AccountId = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]
ActionName = Literal["allow", "throttle", "require_kyc", "block"]


class ActivityPoint(BaseModel):
    """What the detector saw of the account in one event-time hour."""

    model_config = ConfigDict(from_attributes=True)

    hour: datetime
    score: float
    n_events: int = Field(description="Cumulative events of the account at its last score in this hour.")
    new_events: int = Field(description="Events since the previous point (activity in between).")
    ring_id: str | None
    action: str


class AuditOut(BaseModel):
    """One audit-log entry."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    ts: datetime
    actor: str
    key_id: int | None
    action: str
    target_type: str
    target_id: str
    comment: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """A page of audit entries; pass `next_cursor` as `cursor` for the next one."""

    items: list[AuditOut]
    next_cursor: str | None


class SuppressionOut(BaseModel):
    """A false-positive verdict: suppresses the account until `expires_at`; kept as a label."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: str
    alert_id: int | None
    label: str
    actor: str
    comment: str
    created_at: datetime
    expires_at: datetime
    active: bool = False


class DecisionOut(BaseModel):
    """What a gateway should do with the account's requests, and until when."""

    account_id: str
    action: ActionName
    rpm_limit: int | None = Field(description="Requests per minute allowed; null = no limit, 0 = none.")
    reason: str
    expires_at: datetime = Field(description="Ask again after this; the decision no longer holds.")
    source: str = Field(description="detector, analyst, ring_action, suppression, kyc or default.")
    updated_at: datetime | None


class AlertDetail(AlertOut):
    """An alert with its evidence, the account's activity timeline, history and decision."""

    ring_size: int | None
    ring_evidence: list[str]
    timeline: list[ActivityPoint]
    history: list[AuditOut] = Field(description="Analyst actions on this alert, oldest first.")
    labels: list[SuppressionOut] = Field(description="False-positive verdicts on the account, newest first.")
    decision: DecisionOut
    allowed_transitions: list[str]


class TransitionIn(BaseModel):
    """Move an alert: open -> acknowledged -> resolved | false_positive."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["acknowledged", "resolved", "false_positive"]
    comment: Comment
    suppress_days: int | None = Field(
        strict=True, default=None, ge=1, le=365, description="false_positive only: days the account stays suppressed."
    )


class TransitionOut(BaseModel):
    """The alert after the transition, its suppression if any and the account's decision now."""

    alert: AlertOut
    suppression: SuppressionOut | None
    decision: DecisionOut


class RingActionIn(BaseModel):
    """One action on every member of a ring."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["throttle", "require_kyc", "block"]
    comment: Comment
    expires_at: Timestamp | None = Field(default=None, description="Default: the override TTL from settings.")


class RingActionOut(BaseModel):
    """What a ring action did."""

    ring_id: str
    action: str
    accounts: list[str]
    skipped_suppressed: list[str]
    escalation_ids: list[int]
    expires_at: datetime


class OverrideIn(BaseModel):
    """An analyst's decision for one account."""

    model_config = ConfigDict(extra="forbid")

    action: ActionName
    comment: Comment
    # strict: a JSON string of digits is not the integer the schema asks for
    rpm_limit: int | None = Field(default=None, ge=0, le=1_000_000, strict=True, description="Default: the action's.")
    expires_at: Timestamp | None = Field(default=None, description="Default: the override TTL from settings.")


class OverrideOut(BaseModel):
    """The decision now in force, and the KYC escalation it opened, if any."""

    decision: DecisionOut
    escalation_id: int | None


class DeliveryOut(BaseModel):
    """One delivery attempt (the delivery log)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    outbox_id: int
    attempt: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    outcome: str


class OutboxOut(BaseModel):
    """One message to one endpoint."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    endpoint_id: int
    idempotency_key: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None


class EscalationOut(BaseModel):
    """A KYC escalation."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: str
    ring_id: str | None
    reason: str
    status: str
    idempotency_key: str
    created_by: str
    created_at: datetime
    resolved_at: datetime | None
    outcome_comment: str | None


class EscalationDetail(EscalationOut):
    """An escalation with its deliveries."""

    messages: list[OutboxOut]
    deliveries: list[DeliveryOut]


class EscalationPage(BaseModel):
    """A page of escalations."""

    items: list[EscalationOut]
    next_cursor: str | None


class OutcomeIn(BaseModel):
    """The KYC provider's answer."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["verified", "failed"]
    comment: OptionalComment | None = None


class OutcomeOut(BaseModel):
    """The escalation after the outcome and the account's decision now."""

    escalation: EscalationOut
    decision: DecisionOut


class KeyIn(BaseModel):
    """A new API key."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")]
    scope: Literal["analyst", "platform", "admin"]


class KeyOut(BaseModel):
    """An API key (never the key itself)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    scope: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    """A new key; `key` is shown this once and cannot be recovered."""

    key: str


class WebhookIn(BaseModel):
    """A KYC webhook endpoint."""

    model_config = ConfigDict(extra="forbid")

    # ASCII host (IDNA names in their xn-- form), optional port, then any printable path
    url: Annotated[
        str, Field(min_length=8, max_length=2000, pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[!-~]*)?$")
    ]
    secret: Annotated[str, Field(min_length=16, max_length=200, pattern=NO_NUL)] | None = Field(
        default=None, description="HMAC secret; generated when omitted."
    )


class WebhookOut(BaseModel):
    """A webhook endpoint (the secret is not shown)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    active: bool
    source: str
    created_at: datetime


class WebhookCreated(WebhookOut):
    """A new endpoint with its signing secret, shown this once."""

    secret: str
