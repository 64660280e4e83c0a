"""The detection report of CONTRACT.md section 3, readable without the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from core.schema import ACTIONS, REPORT_SCHEMA_ID
from detector.engine import DetectionEngine


@dataclass
class EventCounts:
    """Records read, accepted and rejected (read = accepted + rejected)."""

    read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0


def iso(ts: datetime | None) -> str | None:
    """RFC 3339 in UTC with a `Z`, millisecond precision."""
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def build_report(engine: DetectionEngine, counts: EventCounts) -> dict[str, Any]:
    """The report document of everything the engine flagged."""
    accounts = []
    for flag in sorted(engine.flags.values(), key=lambda f: (-f.score, f.account_id)):
        assert flag.action in ACTIONS
        accounts.append(
            {
                "account_id": flag.account_id,
                "flagged": flag.active,
                "score": round(flag.score, 6),
                "ring_id": flag.ring_id,
                "first_flagged_ts": iso(flag.first_flagged_ts),
                "action": flag.action,
                "reasons": flag.reasons,
                "n_events": flag.n_events,
            }
        )
    rings = [
        {
            "ring_id": r.ring_id,
            "size": len(r.members),
            "score": round(r.score, 6),
            "first_flagged_ts": iso(r.first_flagged_ts),
            "evidence": r.evidence,
            "capabilities": r.capabilities,
            "members": r.members,
        }
        for r in sorted(engine.rings.values(), key=lambda r: (-len(r.members), r.ring_id))
    ]
    return {
        "schema": REPORT_SCHEMA_ID,
        "events": {
            "read": counts.read,
            "accepted": counts.accepted,
            "rejected": counts.rejected,
            "duplicates": counts.duplicates,
        },
        "window": {"first_ts": iso(engine.first_ts), "last_ts": iso(engine.last_ts)},
        "accounts": accounts,
        "rings": rings,
    }


def write_report(doc: dict[str, Any], path: Path) -> None:
    """Write the report atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    tmp.replace(path)
