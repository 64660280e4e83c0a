"""Response and request bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class RingDetail(RingOut):
    """A ring with its members."""

    members: list[str]


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
