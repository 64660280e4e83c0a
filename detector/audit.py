"""The audit log: every analyst and administrator action, append-only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from detector import repository
from detector.keys import Principal
from detector.models import AuditEntry

log = logging.getLogger(__name__)

# the pipeline acts too (re-opening an alert whose suppression lapsed): it is not a key
DETECTOR = Principal(key_id=0, name="detector", scope="system")


def record(
    action: str,
    *,
    actor: Principal,
    target_type: str,
    target_id: str | int,
    session: Session,
    comment: str | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction (an action and its audit commit together)."""
    entry = repository.add_audit(
        {
            "ts": now or datetime.now(UTC),
            "actor": actor.name,
            "key_id": actor.key_id or None,
            "action": action,
            "target_type": target_type,
            "target_id": str(target_id),
            "comment": comment,
            "detail": detail or {},
        },
        session=session,
    )
    log.info(
        "audit",
        extra={"action": action, "actor": actor.name, "target": f"{target_type}:{target_id}"},
    )
    return entry
