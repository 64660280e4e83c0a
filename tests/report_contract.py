"""An independent reading of CONTRACT.md section 3, to check reports against."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator


def _rfc3339(value: str | None) -> str | None:
    if value is not None:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        assert parsed.tzinfo is not None, f"{value} has no zone"
    return value


class Reason(BaseModel):
    feature: str
    value: float
    detail: str


class Account(BaseModel):
    account_id: str
    flagged: bool
    score: float
    ring_id: str | None
    first_flagged_ts: str | None
    action: Literal["allow", "throttle", "require_kyc", "block"]
    reasons: list[Reason]

    _ts = field_validator("first_flagged_ts")(_rfc3339)


class Ring(BaseModel):
    ring_id: str
    size: int
    score: float
    first_flagged_ts: str
    evidence: list[str]

    _ts = field_validator("first_flagged_ts")(_rfc3339)


class Events(BaseModel):
    read: int
    accepted: int
    rejected: int


class Window(BaseModel):
    first_ts: str | None
    last_ts: str | None

    _ts = field_validator("first_ts", "last_ts")(_rfc3339)


class Report(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_: Literal["distillguard.report/v1"]
    events: Events
    window: Window
    accounts: list[Account]
    rings: list[Ring]


def validate_report(doc: dict) -> Report:
    """Parse a report per section 3; raises on any departure."""
    report = Report.model_validate({**doc, "schema_": doc.get("schema")})
    assert report.events.read == report.events.accepted + report.events.rejected
    ring_ids = {r.ring_id for r in report.rings}
    for a in report.accounts:
        if a.flagged:
            assert a.first_flagged_ts is not None and 0.0 <= a.score <= 1.0
        if a.ring_id is not None:
            assert a.ring_id in ring_ids, f"account {a.account_id} points at unknown ring {a.ring_id}"
    for r in report.rings:
        assert r.size == sum(1 for a in report.accounts if a.ring_id == r.ring_id)
    return report
