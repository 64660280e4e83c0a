"""Ring membership: who a shared wrapper phrase ties to a ring, and who it does not."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from core import schema as s
from detector.rings import (
    MIN_WRAPPER_SHARE,
    N_ACCOUNTS,
    RING_ID,
    candidate_rings,
    describe_evidence,
    describe_synchrony,
    pairwise_rings,
    prompt_snippet,
)
from features import synchrony as sy
from features.clusters import TEMPLATE
from features.volume import DIM, ORG, VALUE

RING = [f"m{i}" for i in range(6)]
# the ring's wrapper: its four head keys and two suffix keys, reused by every member
RING_KEYS = ["head-1", "head-2", "head-3", "head-4", "suffix-1", "suffix-2"]
LAB = ["lab-1", "lab-2"]
# a lab's benchmark harness: questions it re-sends run after run, each with the ring's suffix
LAB_KEYS = [f"question-{i}" for i in range(6)] + ["suffix-1", "suffix-2"]


def _links(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["account_id", "dim", "value"], orient="row")


def _wrapper_links(lab_keys: list[str]) -> pl.DataFrame:
    ring = [(a, TEMPLATE, k) for a in RING for k in RING_KEYS]
    lab = [(a, TEMPLATE, k) for a in LAB for k in lab_keys] + [(a, ORG, "org-lab") for a in LAB]
    return _links(ring + lab)


def _members(links: pl.DataFrame, min_wrapper_share: float = MIN_WRAPPER_SHARE) -> list[str]:
    members, _ = candidate_rings(links, pl.Series([*RING, *LAB]), min_size=3, min_wrapper_share=min_wrapper_share)
    return sorted(members.get_column("account_id").to_list())


def test_customer_sharing_one_suffix_with_a_ring_is_not_a_member() -> None:
    links = _wrapper_links(LAB_KEYS)
    assert _members(links) == RING
    # the rule is what keeps them out: without it the two suffix keys make them members
    assert _members(links, min_wrapper_share=0.0) == sorted([*LAB, *RING])


def test_account_whose_wrappers_are_mostly_the_rings_is_a_member() -> None:
    # the same lab reusing the ring's whole wrapper (and one question of its own) is a member
    links = _wrapper_links([*RING_KEYS, "question-0"])
    assert _members(links) == sorted([*LAB, *RING])


def test_infrastructure_links_count_whatever_the_wrapper_share() -> None:
    # the lab's own harness keys do not stop what it shares beyond prompts from linking it
    shared = (("ip", "198.51.100.7"), ("user_agent", "harvester/2"))
    infra = [(a, dim, val) for a in [*LAB, *RING[:2]] for dim, val in shared]
    links = pl.concat([_wrapper_links(LAB_KEYS), _links(infra)])
    assert _members(links) == sorted([*LAB, *RING])


def _pairwise(
    holdings: dict[str, list[str]], min_bridge: int | None, windows: dict[str, int] | None = None, co_keys: int = 7
) -> list[str]:
    """Members of the early rings of young targeted accounts holding `holdings` (account -> wrapper keys).

    `windows`: each account's activity mask (bit i: active i ticks ago), for the co-activity links.
    """
    keys = pl.DataFrame([(a, k) for a, ks in holdings.items() for k in ks], schema=["account_id", VALUE], orient="row")
    # every key is held only by these young targeted accounts: all of them are evidence
    popularity = keys.group_by(VALUE).agg(pl.len().alias(N_ACCOUNTS))
    orgs = pl.DataFrame(schema={"account_id": pl.String, VALUE: pl.String})
    active = (
        None
        if windows is None
        else pl.DataFrame(
            {"account_id": list(windows), sy.ACTIVE_WINDOWS: pl.Series(list(windows.values()), dtype=pl.UInt64)}
        )
    )
    members, _ = pairwise_rings(
        keys,
        popularity,
        orgs,
        min_shared=9,
        min_bridge=min_bridge,
        windows=active,
        min_co_active_shared=co_keys,
        min_size=3,
    )
    return sorted(members.get_column("account_id").to_list())


def _prompt(name: str, bands: int = 8) -> list[str]:
    return [f"{name}-band-{i}" for i in range(bands)]


# two pairs of a ring, each pair sharing two prompts' worth of wrapper keys (10), the pairs bridged
# by 7 band keys of one more prompt
BRIDGED = {
    "a1": _prompt("p") + _prompt("q", 2) + _prompt("x", 7),
    "a2": _prompt("p") + _prompt("q", 2),
    "b1": _prompt("r") + _prompt("s", 2) + _prompt("x", 7),
    "b2": _prompt("r") + _prompt("s", 2),
}


def test_two_ring_pairs_bridged_by_one_prompt_are_one_early_ring() -> None:
    assert _pairwise(BRIDGED, min_bridge=None) == []  # two components of two: no ring of three
    assert _pairwise(BRIDGED, min_bridge=7) == ["a1", "a2", "b1", "b2"]


def test_one_prompt_of_an_account_without_a_two_prompt_partner_links_nobody() -> None:
    # app users: one system prompt, all 8 bands shared, nobody shares two prompts' worth
    app = {f"u{i}": _prompt("app-system") + [f"u{i}-own-{j}" for j in range(3)] for i in range(4)}
    assert _pairwise(app, min_bridge=7) == []
    # nor does it join a ring pair: a user sharing 8 keys with a1, 8 with b1, has no partner of its own
    holdings = {**BRIDGED, "a1": BRIDGED["a1"][:-7], "b1": BRIDGED["b1"][:-7]}
    holdings["u"] = _prompt("p") + _prompt("r")
    assert _pairwise(holdings, min_bridge=7) == []


def test_prompt_snippet_keeps_both_ends_of_a_long_prompt() -> None:
    text = "You are a grader.\n\n  Score   this answer " + "x" * 500 + " Reply with a JSON rubric."
    snip = prompt_snippet(text, width=80)
    assert len(snip) <= 80
    assert snip.startswith("You are a grader. Score this answer") and snip.endswith("Reply with a JSON rubric.")
    assert " … " in snip
    assert prompt_snippet("short  one\n") == "short one"


def test_evidence_quotes_an_example_of_a_shared_template() -> None:
    evidence = pl.DataFrame(
        {
            RING_ID: ["r1", "r1", "r1"],
            DIM: [TEMPLATE, TEMPLATE, s.IP],
            VALUE: ["12", "34", "10.0.0.1"],
            "n_members": [9, 7, 5],
        }
    )
    lines = describe_evidence(evidence, "r1", examples={12: "Think step by step: <question>"})
    assert 'top 12 (9) e.g. "Think step by step: <question>", 34 (7)' in lines[0]
    assert lines[1].endswith("top 10.0.0.1 (5)")


# an evasive ring's first hour: three aged accounts, each pair sharing 7 band keys of one wrapper
# (paraphrased: no two share two prompts' worth), each with its own question text
EVASIVE = {f"e{i}": _prompt("wrapper", 7) + [f"e{i}-own-{j}" for j in range(4)] for i in range(3)}


def test_a_synchronised_trio_sharing_one_prompt_is_an_early_ring() -> None:
    # all three active in the current tick, two of them an hour earlier too
    assert _pairwise(EVASIVE, min_bridge=7, windows={"e0": 0b10001, "e1": 0b1, "e2": 0b10001}) == ["e0", "e1", "e2"]


def test_the_same_trio_acting_in_turns_is_not() -> None:
    # the same keys, but no two active in one tick: app users who happen to share a system prompt
    assert _pairwise(EVASIVE, min_bridge=7, windows={"e0": 0b1, "e1": 0b10, "e2": 0b100}) == []
    # without co-activity the rule is off: nothing links them either
    assert _pairwise(EVASIVE, min_bridge=7) == []


def test_a_co_active_pair_is_not_a_ring_without_a_third() -> None:
    # e0 and e1 in step, e2 never with either: the one co-active link closes no triangle
    assert _pairwise(EVASIVE, min_bridge=7, windows={"e0": 0b11, "e1": 0b11, "e2": 0b100}) == []


def test_co_activity_does_not_grow_a_ring_of_two_prompt_partners() -> None:
    # a1 and a2 share two prompts' worth; u shares one prompt with each and is active with both
    holdings = {
        "a1": _prompt("p") + _prompt("q", 2),
        "a2": _prompt("p") + _prompt("q", 2),
        "a3": _prompt("p") + _prompt("q", 2),
        "u": _prompt("p", 7),
    }
    windows = dict.fromkeys(holdings, 0b1)
    assert _pairwise(holdings, min_bridge=None, windows=windows) == ["a1", "a2", "a3"]


def test_synchrony_evidence_says_whether_members_act_in_step() -> None:
    kw = {"window": timedelta(minutes=15), "horizon": timedelta(hours=4)}
    line = describe_synchrony((0.9, 0.6), (0.1, 0.05), **kw)
    assert line.startswith("synchrony of members: 90% of member pairs were active in a common 15-minute window")
    assert "last 4 h" in line and "random pairs of active accounts: 10% (0.05)" in line
    assert "act in step" in line
    assert "no more in step than random" in describe_synchrony((0.1, 0.05), (0.1, 0.05), **kw)
