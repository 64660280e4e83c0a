"""Ring membership: who a shared wrapper phrase ties to a ring, who it does not, and which ring."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
from scipy.sparse import csr_matrix

from core import schema as s
from detector.rings import (
    MAX_CONDUCTANCE,
    MIN_WRAPPER_SHARE,
    N_ACCOUNTS,
    RING_ID,
    candidate_rings,
    communities,
    describe_evidence,
    describe_synchrony,
    pairwise_rings,
    prompt_snippet,
)
from features import synchrony as sy
from features.clusters import TEMPLATE
from features.volume import DIM, ORG, PAYMENT, VALUE

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
    holdings: dict[str, list[str]],
    min_bridge: int | None,
    windows: dict[str, int] | None = None,
    co_keys: int = 7,
    concerted: list[str] | None = None,
    flagged: list[str] | None = None,
    recruits: list[str] | None = None,
    phrases: dict[str, list[str]] | None = None,
    texts: dict[str, list[str]] | None = None,
) -> list[str]:
    """Members of the early rings of young targeted accounts holding `holdings` (account -> wrapper keys).

    `windows`: each account's activity mask (bit i: active i ticks ago), for the co-activity links;
    `phrases` and `texts` (account -> phrases, texts), for the concerted phrase links.
    """

    def rows(held: dict[str, list[str]] | None) -> pl.DataFrame | None:
        if held is None:
            return None
        pairs = [(a, k) for a, ks in held.items() for k in ks]
        return pl.DataFrame(pairs, schema={"account_id": pl.String, VALUE: pl.String}, orient="row")

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
        concerted=None if concerted is None else pl.Series("account_id", concerted, dtype=pl.String),
        min_concerted_shared=7,
        flagged=None if flagged is None else pl.Series("account_id", flagged, dtype=pl.String),
        recruits=None if recruits is None else pl.Series("account_id", recruits, dtype=pl.String),
        min_recruit_shared=9,
        phrases=rows(phrases),
        texts=rows(texts if texts is not None else {}),
        min_concerted_phrases=3,
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


def test_a_trio_turned_candidates_together_after_a_past_is_an_early_ring() -> None:
    # the evasive trio acting in turns (no common tick), but all three became candidates lately
    # after a past of ordinary use: a campaign starting on aged accounts
    turns = {"e0": 0b1, "e1": 0b10, "e2": 0b100}
    assert _pairwise(EVASIVE, min_bridge=7, windows=turns, concerted=["e0", "e1", "e2"]) == ["e0", "e1", "e2"]
    # one of them a candidate for long (or new, without a past): the other pair is no ring
    assert _pairwise(EVASIVE, min_bridge=7, windows=turns, concerted=["e0", "e1"]) == []
    assert _pairwise(EVASIVE, min_bridge=7, windows=turns, concerted=[]) == []


def test_a_concerted_pair_does_not_pull_in_an_older_candidate() -> None:
    # app users sharing one prompt: two turned candidates lately, the third long ago
    app = {f"u{i}": _prompt("app-prompt") + [f"u{i}-own-{j}" for j in range(3)] for i in range(3)}
    assert _pairwise(app, min_bridge=7, concerted=["u0", "u1"]) == []
    assert _pairwise(app, min_bridge=7, concerted=["u0", "u1", "u2"]) == ["u0", "u1", "u2"]


def test_concerted_links_do_not_tie_a_newcomer_to_a_flagged_ring() -> None:
    # an app user turning candidate as a ring starts shares one prompt with two of its members: once
    # they are flagged, the concerted rule does not pull it in (a flagged ring grows by stronger rules)
    trio = ["e0", "e1", "e2"]
    assert _pairwise(EVASIVE, min_bridge=7, concerted=trio, flagged=["e0", "e1"]) == []
    # the ring it surfaced, all flagged, is held by the same links tick after tick
    assert _pairwise(EVASIVE, min_bridge=7, concerted=trio, flagged=trio) == trio
    assert _pairwise(EVASIVE, min_bridge=7, concerted=trio, flagged=[]) == trio
    # nor do newcomers of a flagged ring form a ring with it through concerted links: the trio,
    # one of whom shares a prompt with a flagged account, is that ring's fringe
    holdings = {**EVASIVE, "f": _prompt("wrapper", 7)}
    assert _pairwise(holdings, min_bridge=7, concerted=trio, flagged=["f"]) == []


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


# --- communities: one ring per campaign, not per connected component ---

CAMPAIGN_A = [f"a{i:02d}" for i in range(8)]
CAMPAIGN_B = [f"b{i:02d}" for i in range(6)]


def _campaign(accounts: list[str], name: str) -> list[tuple[str, str, str]]:
    """A campaign's accounts sharing its own user agent, payment instrument and wrapper."""
    shared = ((s.USER_AGENT, f"{name}-client/1"), (PAYMENT, f"{name}-card"), (TEMPLATE, f"{name}-wrapper"))
    return [(a, dim, val) for a in accounts for dim, val in shared]


def _rings(links: pl.DataFrame, suspicious: list[str], max_conductance: float = MAX_CONDUCTANCE) -> list[list[str]]:
    members, _ = candidate_rings(links, pl.Series(suspicious), min_size=3, max_conductance=max_conductance)
    return sorted(sorted(p.get_column("account_id").to_list()) for p in members.partition_by("ring_id"))


def test_two_campaigns_joined_by_one_shared_value_are_two_rings() -> None:
    # one datacenter address used by two accounts of A and one of B: evidence, and a bridge
    bridge = [(a, s.IP, "203.0.113.9") for a in (CAMPAIGN_A[0], CAMPAIGN_A[1], CAMPAIGN_B[0])]
    links = _links(_campaign(CAMPAIGN_A, "a") + _campaign(CAMPAIGN_B, "b") + bridge)
    assert _rings(links, CAMPAIGN_A + CAMPAIGN_B) == [CAMPAIGN_A, CAMPAIGN_B]
    # without the community step the bridge made them one ring
    assert _rings(links, CAMPAIGN_A + CAMPAIGN_B, max_conductance=0.0) == [sorted(CAMPAIGN_A + CAMPAIGN_B)]


def test_two_campaigns_joined_by_one_bridging_account_are_two_rings() -> None:
    # an account holding both campaigns' client and card: it joins one of them, not both together
    bridge = [("x", dim, val) for row in (_campaign(["x"], "a")[:2], _campaign(["x"], "b")[:2]) for _, dim, val in row]
    links = _links(_campaign(CAMPAIGN_A, "a") + _campaign(CAMPAIGN_B, "b") + bridge)
    rings = _rings(links, [*CAMPAIGN_A, *CAMPAIGN_B, "x"])
    assert len(rings) == 2
    assert {tuple(r) for r in rings} & {tuple(CAMPAIGN_A), tuple(CAMPAIGN_B)}
    assert sorted(a for r in rings for a in r) == sorted([*CAMPAIGN_A, *CAMPAIGN_B, "x"])


def test_one_dense_campaign_is_not_split() -> None:
    # every member shares the client and card; pairs of members also share an address of their own
    pairs = [(a, s.IP, f"198.51.100.{i // 2}") for i, a in enumerate(CAMPAIGN_A + CAMPAIGN_B)]
    links = _links(_campaign(CAMPAIGN_A + CAMPAIGN_B, "a") + pairs)
    assert _rings(links, CAMPAIGN_A + CAMPAIGN_B) == [sorted(CAMPAIGN_A + CAMPAIGN_B)]


def test_a_fringe_too_small_to_be_a_ring_stays_with_its_community() -> None:
    # two accounts hanging on A by one shared address and a wrapper of their own are members of A
    fringe = ["f1", "f2"]
    extra = [(a, s.IP, "203.0.113.9") for a in [*fringe, CAMPAIGN_A[0]]] + [(a, TEMPLATE, "f-wrapper") for a in fringe]
    extra += [(a, TEMPLATE, "f-wrapper") for a in CAMPAIGN_A[:1]]
    links = _links(_campaign(CAMPAIGN_A, "a") + extra)
    assert _rings(links, [*CAMPAIGN_A, *fringe]) == [sorted([*CAMPAIGN_A, *fringe])]


def test_rings_do_not_depend_on_row_order() -> None:
    bridge = [(a, s.IP, "203.0.113.9") for a in (CAMPAIGN_A[0], CAMPAIGN_A[1], CAMPAIGN_B[0])]
    links = _links(_campaign(CAMPAIGN_A, "a") + _campaign(CAMPAIGN_B, "b") + bridge)
    suspicious = pl.Series([*CAMPAIGN_A, *CAMPAIGN_B])
    members, evidence = candidate_rings(links, suspicious, min_size=3)
    for seed in range(5):
        shuffled = candidate_rings(
            links.sample(fraction=1.0, shuffle=True, seed=seed), suspicious.shuffle(seed), min_size=3
        )
        assert shuffled[0].sort("account_id").equals(members.sort("account_id"))
        assert shuffled[1].equals(evidence)


def test_two_early_rings_bridged_by_one_account_are_two_rings() -> None:
    # two groups of young accounts, each pair within a group sharing two prompts' worth of keys;
    # one account of A also shares two prompts with one account of B
    group_a = {f"a{i}": _prompt("pa") + _prompt("qa", 2) for i in range(5)}
    group_b = {f"b{i}": _prompt("pb") + _prompt("qb", 2) for i in range(5)}
    holdings = {**group_a, **group_b}
    for a in ("a0", "b0"):
        holdings[a] = holdings[a] + _prompt("x") + _prompt("y", 2)
    # without the community step the pair a0-b0 made them one ring
    joined = _pairwise_rings(holdings, min_bridge=7, max_conductance=0.0)
    assert joined == [sorted([*group_a, *group_b])]
    rings = _pairwise_rings(holdings, min_bridge=7)
    assert rings == [sorted(group_a), sorted(group_b)]
    for seed in range(3):
        order = dict(sorted(holdings.items(), key=lambda kv: hash((seed, kv[0]))))
        assert _pairwise_rings(order, min_bridge=7) == rings


def _pairwise_rings(
    holdings: dict[str, list[str]], min_bridge: int | None, max_conductance: float = MAX_CONDUCTANCE
) -> list[list[str]]:
    keys = pl.DataFrame([(a, k) for a, ks in holdings.items() for k in ks], schema=["account_id", VALUE], orient="row")
    popularity = keys.group_by(VALUE).agg(pl.len().alias(N_ACCOUNTS))
    orgs = pl.DataFrame(schema={"account_id": pl.String, VALUE: pl.String})
    members, _ = pairwise_rings(
        keys, popularity, orgs, min_shared=9, min_bridge=min_bridge, min_size=3, max_conductance=max_conductance
    )
    return sorted(sorted(p.get_column("account_id").to_list()) for p in members.partition_by("ring_id"))


def test_communities_cut_a_thin_bridge_only() -> None:
    # two cliques of 6 joined by one edge: cut there; one clique of 12: not cut
    clique = np.ones((6, 6)) - np.eye(6)
    two = np.block([[clique, np.zeros((6, 6))], [np.zeros((6, 6)), clique]])
    two[5, 6] = two[6, 5] = 1.0
    labels = communities(csr_matrix(two), np.arange(12), min_size=3)
    assert np.unique(labels[:6]).size == 1 and np.unique(labels[6:]).size == 1 and labels[0] != labels[6]
    one = np.ones((12, 12)) - np.eye(12)
    assert np.unique(communities(csr_matrix(one), np.arange(12), min_size=3)).size == 1
    # the same graph indexed the other way round gives the same partition
    flipped = communities(csr_matrix(two[::-1, ::-1]), np.arange(12), min_size=3)[::-1]
    assert (flipped[:, None] == flipped[None, :]).tolist() == (labels[:, None] == labels[None, :]).tolist()


def test_two_rings_sharing_one_member_stay_two() -> None:
    # the engine's merge of candidate and early rings: accounts and rings are nodes, membership
    # edges; ring A (8 accounts) and ring E (6) share one account, ring B (5) shares 4 with E
    ring_a, ring_e, ring_b = range(8), range(7, 13), range(9, 14)
    rows, cols = [], []
    for part, members in enumerate((ring_a, ring_e, ring_b)):
        rows += list(members)
        cols += [14 + part] * len(members)
    half = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(17, 17))
    customer = np.r_[np.arange(14), -np.ones(3, dtype=np.int64)]
    labels = communities((half + half.T).tocsr(), customer, min_size=3)
    assert labels[14] != labels[15]  # A is not merged with E through their one shared account
    assert labels[15] == labels[16]  # E and B, sharing most of B, are one ring
    assert np.unique(labels[:7]).size == 1 and labels[0] == labels[14]


# seed 808's evasive ring at 55 minutes: two members switched after a past ("s0", "s1": one prompt in
# common), the third ("r") shows no past in the stream but shares two prompts' worth with s0 and one
# with s1
RECRUITED = {
    "s0": _prompt("w1", 7) + _prompt("w2", 2) + ["s0-own"],
    "s1": [*_prompt("w1", 7), "s1-own"],
    "r": _prompt("w1", 7) + _prompt("w2", 2) + ["r-own"],
}


def test_a_recruit_vouched_for_by_two_prompts_with_a_switching_account_is_concerted() -> None:
    # without the recruit rule the two switching accounts alone close no triangle
    assert _pairwise(RECRUITED, min_bridge=7, concerted=["s0", "s1"]) == []
    assert _pairwise(RECRUITED, min_bridge=7, concerted=["s0", "s1"], recruits=["r"]) == ["r", "s0", "s1"]
    # no switching account to vouch for it: recruits alone are nothing
    assert _pairwise(RECRUITED, min_bridge=7, concerted=[], recruits=["r", "s0", "s1"]) == []


def test_one_prompt_in_common_with_a_switching_account_vouches_for_nobody() -> None:
    # an app user newly seen sharing the app's prompt (one prompt's worth) with two switching accounts
    holdings = {**RECRUITED, "r": [*_prompt("w1", 7), "r-own"]}
    assert _pairwise(holdings, min_bridge=7, concerted=["s0", "s1"], recruits=["r"]) == []
    # its two-prompt partner did not switch after a past (a candidate for long): no vouching either
    assert _pairwise(RECRUITED, min_bridge=7, concerted=["s1"], recruits=["r"]) == []


def _phrasing_links(users: int, *, infra: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Four accounts that each sent one phrasing twice (its 8 band keys reused), and how many accounts used it."""
    sharers = [f"u{i}" for i in range(4)]
    keys = [f"phrase-{i}" for i in range(8)]
    rows = [(a, TEMPLATE, k) for a in sharers for k in keys]
    if infra:
        rows += [(a, "user_agent", "harvester/2") for a in sharers]
    return _links(rows), pl.DataFrame({VALUE: keys, N_ACCOUNTS: [users] * len(keys)})


def test_a_ring_sharing_nothing_but_one_popular_phrasing_is_none() -> None:
    # app users or students who each sent a popular question twice: one phrasing's 8 band keys and
    # nothing else in common, the phrasing used by 40 accounts: no ring
    links, key_users = _phrasing_links(40)
    suspicious = pl.Series([f"u{i}" for i in range(4)])
    members, _ = candidate_rings(links, suspicious, min_size=3, key_users=key_users)
    assert members.height == 0
    # a phrasing of their own (no one else used it: a campaign's wrapper) is a ring, as before
    links, own = _phrasing_links(4)
    members, _ = candidate_rings(links, suspicious, min_size=3, key_users=own)
    assert members.height == 4
    # and so is the popular phrasing with a second value in common
    links, key_users = _phrasing_links(40, infra=True)
    members, _ = candidate_rings(links, suspicious, min_size=3, key_users=key_users)
    assert members.height == 4
    # or when most members send most of their prompts in it (a campaign wrapping every question
    # in a popular wrapper: seed 1202's heavy trio)
    links, key_users = _phrasing_links(40)
    members, _ = candidate_rings(links, suspicious, min_size=3, key_users=key_users, wrapping=suspicious[:2])
    assert members.height == 4
    members, _ = candidate_rings(links, suspicious, min_size=3, key_users=key_users, wrapping=suspicious[:1])
    assert members.height == 0


# an evasive ring's first hour: three switching accounts whose paraphrased wrappers share no band key,
# but each pair shares three phrases of the family's clauses, each in a different text of its own
PHRASED = {f"e{i}": [f"e{i}-own-{j}" for j in range(8)] for i in range(3)}
CLAUSES = {f"e{i}": ["you are a strict", "are a strict grader", "compare it with an"] for i in range(3)}
OWN_TEXTS = {f"e{i}": [f"e{i}-text-{j}" for j in range(3)] for i in range(3)}


def test_concerted_accounts_sharing_phrases_and_no_text_are_a_ring() -> None:
    trio = ["e0", "e1", "e2"]
    assert _pairwise(PHRASED, min_bridge=7, concerted=trio) == []
    assert _pairwise(PHRASED, min_bridge=7, concerted=trio, phrases=CLAUSES, texts=OWN_TEXTS) == trio
    # the phrase links are concerted links: accounts that did not switch together link by none
    assert _pairwise(PHRASED, min_bridge=7, concerted=["e0", "e1"], phrases=CLAUSES, texts=OWN_TEXTS) == []
    # two phrases in common are a coincidence of phrasing, not a ring's wrapper vocabulary
    two = {a: c[:2] for a, c in CLAUSES.items()}
    assert _pairwise(PHRASED, min_bridge=7, concerted=trio, phrases=two, texts=OWN_TEXTS) == []


def test_accounts_sending_the_same_text_are_no_phrase_link() -> None:
    # look-alikes share phrases by sending one text (a corpus question, an app's prompt): that pair
    # is no phrase link, and the other two links close no triangle
    trio = ["e0", "e1", "e2"]
    same = {**OWN_TEXTS, "e0": [*OWN_TEXTS["e0"], "homework"], "e1": [*OWN_TEXTS["e1"], "homework"]}
    assert _pairwise(PHRASED, min_bridge=7, concerted=trio, phrases=CLAUSES, texts=same) == []
    # nor does a phrase link tie a newcomer to a flagged ring (as the key-based concerted links)
    assert _pairwise(PHRASED, min_bridge=7, concerted=trio, phrases=CLAUSES, texts=OWN_TEXTS, flagged=["e0"]) == []
