"""Scoring a report against the simulator's truth: account figures and one ring per campaign."""

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
