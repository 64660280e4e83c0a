"""Candidate rings: suspicious accounts linked by what they share.

An account-value bipartite graph (value = an IP, a /24, a user agent, a template...) is cut
down to the values that mostly suspicious accounts use: a value shared by a large population of
which few look suspicious (a campus NAT, an app's user agent) links nobody. Connected
components of what remains, of at least `min_size` accounts, are candidate rings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from core import schema as s
from features import synchrony as sy
from features.clusters import TEMPLATE, TEMPLATE_ONCE
from features.volume import DIM, EMAIL_SHAPE, IP_PREFIX, ORG, PAYMENT, SIGNUP_PREFIX, VALUE

RING_ID = "ring_id"
RING_SIZE = "ring_size"
N_ACCOUNTS = "n_accounts"
LINK_DIMS = (s.IP, IP_PREFIX, s.USER_AGENT, PAYMENT, SIGNUP_PREFIX, EMAIL_SHAPE, TEMPLATE, TEMPLATE_ONCE)
# a prompt carries up to 8 wrapper band keys: the keys a targeted account used once weigh 1/8 each
# towards `min_degree`, so one prompt is one piece of evidence however many of its bands match
ONCE_WEIGHT = 0.125
# the share of an account's own wrapper keys (by weight) that must be ring evidence for its wrapper
# keys to link it: measured on seed 101, harvesters' shares are 1.0 at the median and >= 0.5 in
# over 99% of ticks, a benchmark harness sharing one suffix with a ring stays at 0.08-0.4
MIN_WRAPPER_SHARE = 0.5
_DIM_LABELS = {
    s.IP: "IP addresses",
    IP_PREFIX: "networks (/24, /64)",
    s.USER_AGENT: "user agents",
    PAYMENT: "payment instruments",
    SIGNUP_PREFIX: "signup networks",
    EMAIL_SHAPE: "e-mail shapes and domains",
    TEMPLATE: "prompt templates (recurring, or used once by mostly capability-targeted accounts)",
}


def ring_id_for(members: list[str]) -> str:
    """A stable ring id derived from its lowest member id."""
    return "r-" + hashlib.sha1(min(members).encode()).hexdigest()[:10]


def _no_rings() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Empty (members, evidence) frames."""
    return (
        pl.DataFrame(schema={s.ACCOUNT_ID: pl.String, RING_ID: pl.String, RING_SIZE: pl.Int64}),
        pl.DataFrame(schema={RING_ID: pl.String, DIM: pl.String, VALUE: pl.String, "n_members": pl.Int64}),
    )


def _rings_of(components: pl.DataFrame, *, min_size: int) -> pl.DataFrame:
    """(account_id, ring_id, ring_size) of the components (`_c`, with each account's `_org`) that hold
    at least `min_size` independent customers (not one organisation's accounts), each named after
    its lowest member."""
    components = components.with_columns(
        pl.len().over("_c").alias(RING_SIZE), pl.col("_org").n_unique().over("_c").alias("_n_orgs")
    ).filter(pl.col("_n_orgs") >= min_size)
    ids = components.group_by("_c").agg(pl.col(s.ACCOUNT_ID).min().alias("_min"))
    ids = ids.with_columns(
        pl.col("_min").map_elements(lambda m: ring_id_for([m]), return_dtype=pl.String).alias(RING_ID)
    )
    return components.join(ids, on="_c").select(s.ACCOUNT_ID, RING_ID, pl.col(RING_SIZE).cast(pl.Int64))


def _own_wrappers_unlinked(held: pl.DataFrame, edges: pl.DataFrame, *, min_share: float) -> pl.DataFrame:
    """`edges` without the wrapper-key edges of accounts whose wrapper keys are mostly their own.

    `held` is every (account_id, dim, value, _w) of the suspicious accounts, `edges` the part of it
    that is evidence. A harvester wraps its requests in the ring's wrappers, so most of the keys it
    keeps reusing are shared with the ring; a customer with its own harness (a benchmark run that
    re-sends its questions with a standard chain-of-thought suffix a ring also uses) reuses mostly
    keys nobody else holds and shares one phrase: that phrase alone does not make it a member.
    """
    is_key = pl.col(DIM) == TEMPLATE
    share = (
        edges.filter(is_key)
        .group_by(s.ACCOUNT_ID)
        .agg(pl.col("_w").sum().alias("_linked_w"))
        .join(held.filter(is_key).group_by(s.ACCOUNT_ID).agg(pl.col("_w").sum().alias("_held_w")), on=s.ACCOUNT_ID)
        .filter(pl.col("_linked_w") < min_share * pl.col("_held_w"))
    )
    return edges.filter(~(is_key & pl.col(s.ACCOUNT_ID).is_in(share.get_column(s.ACCOUNT_ID).implode())))


def _evidence(edges: pl.DataFrame, members: pl.DataFrame, *, min_members: int = 1) -> pl.DataFrame:
    """(ring_id, dim, value, n_members): the values ring members share, most shared first."""
    return (
        edges.join(members, on=s.ACCOUNT_ID)
        .group_by(RING_ID, DIM, VALUE)
        .agg(pl.len().cast(pl.Int64).alias("n_members"))
        .filter(pl.col("n_members") >= min_members)
        .sort(RING_ID, "n_members", VALUE, descending=[False, True, False])
    )


def candidate_rings(
    links: pl.DataFrame,
    suspicious: pl.Series,
    *,
    min_size: int = 3,
    min_suspicious_share: float = 0.5,
    min_degree: int = 2,
    min_holders: int = 3,
    dims: tuple[str, ...] = LINK_DIMS,
    popularity: pl.DataFrame | None = None,
    min_wrapper_share: float = MIN_WRAPPER_SHARE,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Group suspicious accounts into rings.

    `links` holds (account_id, dim, value) for the whole population, or only for the suspicious
    accounts when `popularity` (dim, value, n_accounts: how many accounts of the whole population
    hold each value) is given — the cheap form when the population is large. An account links
    by wrapper keys only when at least `min_wrapper_share` of its own are ring evidence (see
    `_own_wrappers_unlinked`). Returns
    (account_id, ring_id, ring_size) for ring members and (ring_id, dim, value, n_members) —
    the shared values that tie each ring together, its evidence.
    """
    if suspicious.len() < min_size:
        return _no_rings()
    sus = pl.DataFrame({s.ACCOUNT_ID: suspicious.unique()}).with_columns(pl.lit(True).alias("_sus"))
    # accounts of one declared organisation are one customer: values only they share (their own
    # network, client, benchmark prompts) tie no independent accounts together
    orgs = links.filter(pl.col(DIM) == ORG).group_by(s.ACCOUNT_ID).agg(pl.col(VALUE).min().alias("_org"))
    once = pl.col(DIM) == TEMPLATE_ONCE
    scoped = links.filter(pl.col(DIM).is_in(list(dims))).with_columns(
        # an address and its /24 are one piece of evidence, not two
        pl.when(once)
        .then(pl.lit(ONCE_WEIGHT))
        .when(pl.col(DIM) == IP_PREFIX)
        .then(pl.lit(0.5))
        .otherwise(pl.lit(1.0))
        .alias("_w"),
        pl.when(once).then(pl.lit(TEMPLATE)).otherwise(pl.col(DIM)).alias(DIM),
    )
    if popularity is None:
        population = scoped.group_by(DIM, VALUE).agg(pl.len().alias("_n_all"))
    else:
        # counted per original dimension: the once-used wrapper keys count as templates here too
        population = (
            popularity.filter(pl.col(DIM).is_in(list(dims)))
            .with_columns(
                pl.when(pl.col(DIM) == TEMPLATE_ONCE).then(pl.lit(TEMPLATE)).otherwise(pl.col(DIM)).alias(DIM)
            )
            .group_by(DIM, VALUE)
            .agg(pl.col(N_ACCOUNTS).sum().alias("_n_all"))
        )
    held = scoped.join(sus, on=s.ACCOUNT_ID).join(orgs, on=s.ACCOUNT_ID, how="left")
    held = held.with_columns(pl.coalesce("_org", s.ACCOUNT_ID).alias("_org"))
    popularity = (
        held.group_by(DIM, VALUE)
        .agg(pl.len().alias("_n_sus"), pl.col("_org").n_unique().alias("_n_sus_orgs"))
        # two accounts on one residential /24 or one phrasing is a coincidence a big population makes
        # daily; a value is evidence once `min_holders` independent suspicious customers share it
        .filter(pl.col("_n_sus_orgs") >= min_holders)
        .join(population, on=[DIM, VALUE])
    )
    linking = popularity.filter(pl.col("_n_sus") / pl.col("_n_all") >= min_suspicious_share)
    edges = _own_wrappers_unlinked(
        held, held.join(linking.select(DIM, VALUE), on=[DIM, VALUE]), min_share=min_wrapper_share
    )
    if edges.height == 0:
        return _no_rings()
    accounts = edges.get_column(s.ACCOUNT_ID).unique().sort()
    values = edges.select(DIM, VALUE).unique().sort(DIM, VALUE).with_row_index("_v")
    a_index = pl.DataFrame({s.ACCOUNT_ID: accounts}).with_row_index("_a")
    e = edges.join(a_index, on=s.ACCOUNT_ID).join(values, on=[DIM, VALUE])
    n_a, n_v = a_index.height, values.height
    rows = e.get_column("_a").to_numpy().astype(np.int64)
    cols = e.get_column("_v").to_numpy().astype(np.int64) + n_a
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_a + n_v, n_a + n_v))
    _, labels = connected_components(graph, directed=False)
    # an account tied to the others by a single shared value may be a coincidence (one proxy
    # address, one common phrase); ring members must share at least `min_degree` values (a key a
    # targeted account used only once counts ONCE_WEIGHT)
    degree = e.group_by(s.ACCOUNT_ID).agg(pl.col("_w").sum().alias("_deg"))
    comp = (
        a_index.with_columns(pl.Series("_c", labels[:n_a]))
        .join(degree, on=s.ACCOUNT_ID)
        .filter(pl.col("_deg") >= min_degree)
    )
    members = _rings_of(
        comp.join(held.select(s.ACCOUNT_ID, "_org").unique(s.ACCOUNT_ID), on=s.ACCOUNT_ID), min_size=min_size
    )
    if members.height == 0:
        return _no_rings()
    return members, _evidence(e, members)


def pairwise_rings(
    keys: pl.DataFrame,
    popularity: pl.DataFrame,
    orgs: pl.DataFrame,
    *,
    min_shared: int = 9,
    min_bridge: int | None = None,
    windows: pl.DataFrame | None = None,
    min_co_active_shared: int | None = None,
    min_co_active_ticks: int = 1,
    min_suspicious_share: float = 0.5,
    min_size: int = 3,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rings of young capability-targeted accounts linked pair by pair by the wrapper keys they share.

    `keys` is (account_id, value): every wrapper key each candidate used, once or more; `popularity`
    (value, n_accounts) how many accounts of the whole population used each; `orgs` (account_id,
    org). A key is evidence when at least half of its holders are candidates (a popular phrasing
    is not). Unlike `candidate_rings`, where one shared value joins two components, two accounts
    are linked only when they share more than `min_shared` - 1 such keys *with each other*: one
    prompt yields at most 8 wrapper band keys, so 9 or more means at least two of their prompts
    match — a ring member's second request says what a coincidence of phrasing cannot. With
    `min_bridge`, two accounts that each already have such a partner are also linked when they share
    `min_bridge` keys (one prompt's worth): two disjoint pairs of a ring bridged by one prompt are one
    ring, while an account without a two-prompt partner (an app user sharing the app's system prompt,
    at most 8 keys with anyone) still links nobody. Connected components of those pairwise links, of
    at least `min_size` independent customers, are rings.
    With `windows` (account_id, active_windows: masks of the recent ticks each account was active in,
    features/synchrony.py) and `min_co_active_shared`, two accounts without a two-prompt partner are
    also linked by that many keys when they were active in at least `min_co_active_ticks` common
    ticks and the link closes a triangle of such links (see `_co_active_links`).
    Returns (account_id, ring_id, ring_size) and (ring_id, dim, value, n_members) like
    `candidate_rings`.
    """
    keys = keys.select(s.ACCOUNT_ID, VALUE).unique()
    held = (
        keys.group_by(VALUE)
        .agg(pl.len().alias("_n_sus"))
        .join(popularity.select(VALUE, N_ACCOUNTS), on=VALUE)
        .filter((pl.col("_n_sus") >= 2) & (pl.col("_n_sus") >= min_suspicious_share * pl.col(N_ACCOUNTS)))
    )
    edges = keys.join(held.select(VALUE), on=VALUE)
    if edges.height == 0:
        return _no_rings()
    a_index = edges.select(s.ACCOUNT_ID).unique().sort(s.ACCOUNT_ID).with_row_index("_a")
    v_index = edges.select(VALUE).unique().sort(VALUE).with_row_index("_v")
    e = edges.join(a_index, on=s.ACCOUNT_ID).join(v_index, on=VALUE)
    n_a = a_index.height
    incidence = csr_matrix(
        (np.ones(e.height), (e.get_column("_a").to_numpy(), e.get_column("_v").to_numpy())),
        shape=(n_a, v_index.height),
    )
    shared = (incidence @ incidence.T).tocoo()
    pair = (shared.row < shared.col) & (shared.data >= min_shared)
    partnered = np.zeros(n_a, dtype=bool)
    partnered[shared.row[pair]] = True
    partnered[shared.col[pair]] = True
    if min_bridge is not None and min_bridge < min_shared:
        bridge = (shared.row < shared.col) & (shared.data >= min_bridge)
        pair |= bridge & partnered[shared.row] & partnered[shared.col]
    if windows is not None and min_co_active_shared is not None:
        w = (
            a_index.join(windows.select(s.ACCOUNT_ID, sy.ACTIVE_WINDOWS), on=s.ACCOUNT_ID, how="left")
            .sort("_a")
            .get_column(sy.ACTIVE_WINDOWS)
            .fill_null(0)
            .to_numpy()
        )
        pair |= _co_active_links(shared, partnered, w, min_shared=min_co_active_shared, min_ticks=min_co_active_ticks)
    if not pair.any():
        return _no_rings()
    graph = coo_matrix((np.ones(int(pair.sum())), (shared.row[pair], shared.col[pair])), shape=(n_a, n_a))
    _, labels = connected_components(graph, directed=False)
    linked = np.zeros(n_a, dtype=bool)
    linked[shared.row[pair]] = True
    linked[shared.col[pair]] = True
    comp = (
        a_index.with_columns(pl.Series("_c", labels), pl.Series("_linked", linked))
        .filter("_linked")
        .join(orgs.select(s.ACCOUNT_ID, pl.col(VALUE).alias("_org")), on=s.ACCOUNT_ID, how="left")
        .with_columns(pl.coalesce("_org", s.ACCOUNT_ID).alias("_org"))
    )
    members = _rings_of(comp, min_size=min_size)
    if members.height == 0:
        return _no_rings()
    return members, _evidence(e.with_columns(pl.lit(TEMPLATE).alias(DIM)), members, min_members=2)


def _co_active_links(
    shared: coo_matrix, partnered: np.ndarray, windows: np.ndarray, *, min_shared: int, min_ticks: int
) -> np.ndarray:
    """Which entries of `shared` (pairs' shared key counts) are co-activity links.

    An evasive ring's aged accounts share one prompt's worth of wrapper keys pairwise (7-8) long
    before any two of them share two prompts' worth, and so do app users (an app's system prompt:
    8 band keys). What tells them apart is when they act: measured on the recordings of seeds 404,
    808, 7 and 8, each link of the 404 ring's first triangle had both accounts active in a common
    15-minute tick of the last two hours, app users' triangles did not. A link needs
    `min_shared` keys, `min_ticks` common ticks in `windows`, and a third account linked the same
    way to both ends (one coincidental co-active pair is not a ring); accounts that already have a
    two-prompt partner are left to the stronger rules: every look-alike or benign account a looser
    form of this rule pulled in hung off a busy ring member it was co-active with by chance.
    """
    upper = shared.row < shared.col
    fresh = ~partnered[shared.row] & ~partnered[shared.col]
    ticks = sy.co_active_ticks(windows[shared.row], windows[shared.col])
    co = upper & fresh & (shared.data >= min_shared) & (ticks >= min_ticks)
    if not co.any():
        return co
    n = partnered.size
    adj = coo_matrix((np.ones(int(co.sum())), (shared.row[co], shared.col[co])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.int64)
    # a link closes a triangle when its two ends have a common neighbour
    common = np.asarray((adj[shared.row[co]].multiply(adj[shared.col[co]])).sum(axis=1)).ravel()
    out = np.zeros_like(co)
    out[np.flatnonzero(co)[common > 0]] = True
    return out


def prompt_snippet(text: str, *, width: int = 120) -> str:
    """A prompt cut to about `width` characters for display: its start and its end, whitespace collapsed."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    # a wrapper sits at the start or the end of the prompt: keep both, drop the middle
    head = (width * 3) // 5
    return f"{flat[:head].rstrip()} … {flat[-(width - head - 3) :].lstrip()}"


def describe_evidence(
    evidence: pl.DataFrame, ring_id: str, *, top: int = 3, examples: Mapping[int, str] | None = None
) -> list[str]:
    """Human-readable lines of what a ring's members share, strongest first.

    `examples` maps a wrapper key to an example prompt that used it: a shared template is quoted,
    since a hash says nothing to the analyst who has to recognise the harvester's wrapper.
    """
    rows = evidence.filter(pl.col(RING_ID) == ring_id)
    out = []
    for dim in rows.get_column(DIM).unique(maintain_order=True).to_list():
        part = rows.filter(pl.col(DIM) == dim).head(top)
        pairs = part.select(VALUE, "n_members").iter_rows()
        if dim == TEMPLATE and examples:
            shown = ", ".join(
                f"{v} ({n})" + (f' e.g. "{examples[int(v)]}"' if v.isdigit() and int(v) in examples else "")
                for v, n in pairs
            )
        else:
            shown = ", ".join(f"{v} ({n})" for v, n in pairs)
        total = rows.filter(pl.col(DIM) == dim).height
        out.append(f"shared {_DIM_LABELS.get(dim, dim)}: {total} value(s), top {shown}")
    return out


def describe_synchrony(
    members: tuple[float, float], baseline: tuple[float, float], *, window: timedelta, horizon: timedelta
) -> str:
    """The evidence line on a ring's synchrony: its member pairs' co-activity beside random active pairs'.

    `members` and `baseline` are (share of pairs active in a common window, mean pairwise Jaccard
    of their active windows), see features/synchrony.py `pair_synchrony`.
    """
    (share, jaccard), (base_share, base_jaccard) = members, baseline
    # the Jaccard of active windows is the measure of lockstep: in a small or busy population most
    # random pairs share some window, few share most of them
    if jaccard > 0 and jaccard >= 2 * base_jaccard:
        lift = (
            f"{jaccard / base_jaccard:.0f}x random pairs' Jaccard" if base_jaccard > 0 else "random pairs never overlap"
        )
        verdict = f"members act in step ({lift}), as accounts driven by one scheduler do"
    elif share > base_share or jaccard > base_jaccard:
        verdict = "members act somewhat more in step than random accounts, not in lockstep"
    else:
        verdict = "members act no more in step than random accounts: the link is what they share, not when they act"
    minutes, hours = window.total_seconds() / 60, horizon.total_seconds() / 3600
    return (
        f"synchrony of members: {share:.0%} of member pairs were active in a common {minutes:g}-minute window "
        f"in the last {hours:g} h (mean Jaccard of their active windows {jaccard:.2f}); random pairs of active "
        f"accounts: {base_share:.0%} ({base_jaccard:.2f}); {verdict}"
    )
