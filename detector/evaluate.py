"""Score a detection report against the simulator's truth (distillguard.truth/v1)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from core.errors import InputError
from core.schema import TRUTH_SCHEMA_ID


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def evaluate(truth: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Account precision/recall, benign false-positive rate, per look-alike group and per campaign, and rings."""
    if truth.get("schema") != TRUTH_SCHEMA_ID:
        raise InputError(f"truth file is not {TRUTH_SCHEMA_ID}")
    labels: dict[str, dict[str, Any]] = truth["accounts"]
    flagged = {a["account_id"]: a for a in report.get("accounts", []) if a.get("flagged")}
    # flagged at some point, released since: the gateway acted on them meanwhile (a false alarm
    # to a legitimate account even if the final report no longer lists it as flagged)
    ever = {a["account_id"] for a in report.get("accounts", []) if a.get("flagged") or a.get("first_flagged_ts")}
    attackers = {a for a, v in labels.items() if v["label"] == "attacker"}
    benign = {a for a, v in labels.items() if v["label"] != "attacker"}
    unknown = set(flagged) - set(labels)
    tp = len(set(flagged) & attackers)
    fp = len(set(flagged) & benign)
    fp_ever = len(ever & benign)
    out: dict[str, Any] = {
        "accounts": {
            "flagged": len(flagged),
            "true_positives": tp,
            "false_positives": fp,
            "unknown_flagged": len(unknown),
            "attackers": len(attackers),
            "benign": len(benign),
            "precision": tp / len(flagged) if flagged else 1.0,
            "recall": tp / len(attackers) if attackers else 1.0,
            "benign_false_positive_rate": fp / len(benign) if benign else 0.0,
            "ever_flagged": len(ever),
            "ever_false_positives": fp_ever,
            "benign_false_positive_rate_ever": fp_ever / len(benign) if benign else 0.0,
        }
    }
    groups = []
    for g in truth.get("lookalikes", []):
        members = set(g["accounts"])
        n_fp = len(members & set(flagged))
        n_ever = len(members & ever)
        groups.append(
            {
                "group_id": g["group_id"],
                "kind": g["kind"],
                "accounts": len(members),
                "flagged": n_fp,
                "flagged_share": n_fp / len(members) if members else 0.0,
                "ever_flagged": n_ever,
                "ever_flagged_share": n_ever / len(members) if members else 0.0,
            }
        )
    out["lookalikes"] = groups
    campaigns = []
    by_style: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in truth.get("campaigns", []):
        members = set(c["accounts"])
        caught = members & set(flagged)
        first = min((_ts(flagged[a]["first_flagged_ts"]) for a in caught), default=None)
        start = _ts(c["start_ts"])
        delay = (first - start).total_seconds() / 60.0 if first is not None else None
        campaigns.append(
            {
                "campaign_id": c["campaign_id"],
                "style": c["style"],
                "accounts": len(members),
                "caught": len(caught),
                "recall": len(caught) / len(members) if members else 1.0,
                "minutes_to_first_detection": round(delay, 1) if delay is not None else None,
            }
        )
        by_style[c["style"]][0] += len(caught)
        by_style[c["style"]][1] += len(members)
    out["campaigns"] = campaigns
    out["recall_by_style"] = {k: (v[0] / v[1] if v[1] else 1.0) for k, v in sorted(by_style.items())}
    _add_ring_figures(out, truth, report, set(flagged))
    return out


def _ring_members(report: dict[str, Any]) -> dict[str, list[str]]:
    """ring_id -> members: the report's rings, else the ring ids its flagged accounts carry."""
    if report.get("rings"):
        return {r["ring_id"]: list(r.get("members", [])) for r in report["rings"]}
    rings: dict[str, list[str]] = defaultdict(list)
    for a in report.get("accounts", []):
        if a.get("flagged") and a.get("ring_id"):
            rings[a["ring_id"]].append(a["account_id"])
    return dict(rings)


def _add_ring_figures(out: dict[str, Any], truth: dict[str, Any], report: dict[str, Any], flagged: set[str]) -> None:
    """One reported ring per campaign is the goal: how campaigns spread over rings, how pure each ring is.

    Per campaign: `rings` (reported rings holding its accounts), `main_ring` and `main_ring_share`
    (the share of its flagged accounts in the ring holding most of them; solo flags are in no ring).
    Per ring (`rings`): its dominant campaign and `purity`, the share of its members from that
    campaign (benign members and other campaigns' are impurity). `ring_summary` sums them up.
    """
    campaign_of = {a: c["campaign_id"] for c in truth.get("campaigns", []) for a in c["accounts"]}
    members = _ring_members(report)
    ring_of = {a: r for r, ms in members.items() for a in ms}
    by_id = {c["campaign_id"]: c for c in out["campaigns"]}
    for c in truth.get("campaigns", []):
        caught = set(c["accounts"]) & flagged
        held = Counter(ring_of[a] for a in c["accounts"] if a in ring_of)
        main = min(held, key=lambda r: (-held[r], r)) if held else None
        by_id[c["campaign_id"]].update(
            rings=len(held),
            main_ring=main,
            main_ring_share=held[main] / len(caught) if main is not None and caught else 0.0,
        )
    rings: list[dict[str, Any]] = []
    for ring_id, ms in sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        counts = Counter(campaign_of[a] for a in ms if a in campaign_of)
        dominant = min(counts, key=lambda k: (-counts[k], k)) if counts else None
        rings.append(
            {
                "ring_id": ring_id,
                "size": len(ms),
                "dominant_campaign": dominant,
                "purity": counts[dominant] / len(ms) if dominant is not None and ms else 0.0,
                "campaigns": dict(sorted(counts.items())),
                "benign": sum(1 for a in ms if a not in campaign_of),
            }
        )
    out["rings"] = rings
    campaigns = out["campaigns"]
    out["ring_summary"] = {
        "reported": len(rings),
        "campaigns_in_one_ring": sum(1 for c in campaigns if c["rings"] == 1),
        "campaigns_sharing_a_ring": len(
            {
                c["campaign_id"]
                for c in campaigns
                for r in rings
                if r["campaigns"].get(c["campaign_id"]) and len(r["campaigns"]) > 1
            }
        ),
        "min_purity": min((r["purity"] for r in rings), default=1.0),
        "min_main_ring_share": min((c["main_ring_share"] for c in campaigns if c["caught"]), default=1.0),
    }
