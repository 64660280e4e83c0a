"""Scoring a report against the simulator's truth: released flags are false alarms too, one ring per campaign."""

from __future__ import annotations

from typing import Any

from core.schema import REPORT_SCHEMA_ID, TRUTH_SCHEMA_ID
from detector.evaluate import evaluate

BULK = [f"b{i}" for i in range(6)]
SLOW = [f"s{i}" for i in range(4)]
HUMANS = [f"h{i}" for i in range(10)]


def _truth() -> dict[str, Any]:
    labels = {a: {"label": "attacker", "group": "c-bulk"} for a in BULK}
    labels |= {a: {"label": "attacker", "group": "c-slow"} for a in SLOW}
    labels |= {a: {"label": "benign", "group": None} for a in HUMANS}
    campaign = {"start_ts": "2026-05-01T00:00:00Z"}
    return {
        "schema": TRUTH_SCHEMA_ID,
        "accounts": labels,
        "campaigns": [
            {**campaign, "campaign_id": "c-bulk", "style": "bulk", "accounts": BULK},
            {**campaign, "campaign_id": "c-slow", "style": "low_and_slow", "accounts": SLOW},
        ],
        "lookalikes": [],
    }


def _report(rings: dict[str, list[str]], solo: tuple[str, ...] = ()) -> dict[str, Any]:
    ring_of = {a: r for r, ms in rings.items() for a in ms}
    accounts = [
        {"account_id": a, "flagged": True, "ring_id": ring_of.get(a), "first_flagged_ts": "2026-05-01T00:15:00Z"}
        for a in [*ring_of, *solo]
    ]
    return {
        "schema": REPORT_SCHEMA_ID,
        "accounts": accounts,
        "rings": [{"ring_id": r, "size": len(ms), "members": ms} for r, ms in rings.items()],
    }


def test_one_ring_per_campaign_is_pure_and_whole() -> None:
    figures = evaluate(_truth(), _report({"r-1": BULK, "r-2": SLOW}))
    assert figures["ring_summary"] == {
        "reported": 2,
        "campaigns_in_one_ring": 2,
        "campaigns_sharing_a_ring": 0,
        "min_purity": 1.0,
        "min_main_ring_share": 1.0,
    }
    by_id = {c["campaign_id"]: c for c in figures["campaigns"]}
    assert by_id["c-bulk"]["main_ring"] == "r-1" and by_id["c-slow"]["main_ring"] == "r-2"


def test_campaigns_merged_into_one_ring_and_a_split_campaign_show() -> None:
    # both campaigns and a human in one ring; a piece of bulk on its own; one bulk account solo
    merged = [*BULK[:3], *SLOW, HUMANS[0]]
    figures = evaluate(_truth(), _report({"r-big": merged, "r-piece": BULK[3:5]}, solo=(BULK[5],)))
    rings = {r["ring_id"]: r for r in figures["rings"]}
    assert rings["r-big"]["dominant_campaign"] == "c-slow"
    assert rings["r-big"]["purity"] == 4 / 8  # the human and the bulk accounts are impurity
    assert rings["r-big"]["benign"] == 1
    assert rings["r-piece"]["purity"] == 1.0
    by_id = {c["campaign_id"]: c for c in figures["campaigns"]}
    assert by_id["c-bulk"]["rings"] == 2
    assert by_id["c-bulk"]["main_ring_share"] == 3 / 6  # the solo flag is in no ring
    assert figures["ring_summary"]["campaigns_sharing_a_ring"] == 2
    # the account figures are what they were
    assert figures["accounts"]["false_positives"] == 1
    assert figures["accounts"]["recall"] == 1.0


def test_reports_without_rings_section_use_the_accounts_ring_ids() -> None:
    report = _report({"r-1": BULK, "r-2": SLOW})
    del report["rings"]
    assert evaluate(_truth(), report)["ring_summary"]["campaigns_in_one_ring"] == 2


def _released_truth() -> dict[str, Any]:
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


def _released_flag(account: str, *, active: bool) -> dict[str, Any]:
    return {"account_id": account, "flagged": active, "first_flagged_ts": "2026-05-01T10:30:00Z"}


def test_accounts_flagged_then_released_count_as_false_alarms_beside_the_final_figures() -> None:
    report = {
        "accounts": [
            *(_released_flag(f"atk{i}", active=True) for i in range(4)),
            _released_flag("ben0", active=False),  # a ring held it for a while, then dissolved
            _released_flag("app0", active=False),
            _released_flag("app1", active=True),
        ]
    }
    a = evaluate(_released_truth(), report)
    acc = a["accounts"]
    assert (acc["flagged"], acc["false_positives"], acc["ever_flagged"], acc["ever_false_positives"]) == (5, 1, 7, 3)
    assert acc["benign_false_positive_rate"] == 1 / 146
    assert acc["benign_false_positive_rate_ever"] == 3 / 146
    (group,) = a["lookalikes"]
    assert (group["flagged"], group["ever_flagged"]) == (1, 2)
    assert group["ever_flagged_share"] == 2 / 50
    assert a["campaigns"][0]["minutes_to_first_detection"] == 30.0
