"""Evaluation against the simulator's truth: released flags are false alarms too."""

from __future__ import annotations

from typing import Any

from core.schema import TRUTH_SCHEMA_ID
from detector.evaluate import evaluate


def _truth() -> dict[str, Any]:
    accounts = {f"atk{i}": {"label": "attacker"} for i in range(4)}
    accounts |= {f"ben{i}": {"label": "benign"} for i in range(96)}
    accounts |= {f"app{i}": {"label": "lookalike"} for i in range(50)}
    return {
        "schema": TRUTH_SCHEMA_ID,
        "accounts": accounts,
        "campaigns": [
            {
                "campaign_id": "c1",
                "style": "bulk",
                "start_ts": "2026-05-01T10:00:00Z",
                "accounts": [f"atk{i}" for i in range(4)],
            }
        ],
        "lookalikes": [{"group_id": "app-1", "kind": "app_system_prompt", "accounts": [f"app{i}" for i in range(50)]}],
    }


def _flag(account: str, *, active: bool) -> dict[str, Any]:
    return {"account_id": account, "flagged": active, "first_flagged_ts": "2026-05-01T10:30:00Z"}


def test_accounts_flagged_then_released_count_as_false_alarms_beside_the_final_figures() -> None:
    report = {
        "accounts": [
            *(_flag(f"atk{i}", active=True) for i in range(4)),
            _flag("ben0", active=False),  # a ring held it for a while, then dissolved
            _flag("app0", active=False),
            _flag("app1", active=True),
        ]
    }
    a = evaluate(_truth(), report)
    acc = a["accounts"]
    assert (acc["flagged"], acc["false_positives"], acc["ever_flagged"], acc["ever_false_positives"]) == (5, 1, 7, 3)
    assert acc["benign_false_positive_rate"] == 1 / 146
    assert acc["benign_false_positive_rate_ever"] == 3 / 146
    (group,) = a["lookalikes"]
    assert (group["flagged"], group["ever_flagged"]) == (1, 2)
    assert group["ever_flagged_share"] == 2 / 50
    assert a["campaigns"][0]["minutes_to_first_detection"] == 30.0
