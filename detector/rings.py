"""Candidate rings: suspicious accounts linked by what they share.

An account-value bipartite graph (value = an IP, a /24, a user agent, a template...) is cut
down to the values that mostly suspicious accounts use: a value shared by a large population of
which few look suspicious (a campus NAT, an app's user agent) links nobody. Communities of what
remains (`communities`: connected components cut where only a thin bridge joins two dense groups),
of at least `min_size` accounts, are candidate rings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta
from functools import cache

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh
from threadpoolctl import ThreadpoolController

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
# a component is cut in two where the weight crossing the cut is below this share of the smaller
# side's total weight (conductance). Measured on the per-tick linking inputs of seeds 7 and 8: a bulk
# ring and the rest 0.009-0.012; low-and-slow and evasive rings of different wrapper families
# 0.06-0.105 (seed 7), of the same family 0.13-0.16 (seed 8: their paraphrases draw on one
# vocabulary, and stay one ring); cuts inside one ring mostly above 0.17, down to 0.04 in the first
# hour of a sparse low-and-slow ring (its pieces are rings of their own until it densifies)
MAX_CONDUCTANCE = 0.1
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


def _fiedler(adjacency: csr_matrix, degree: np.ndarray) -> np.ndarray:
    """The second eigenvector of the normalised adjacency D^-1/2 W D^-1/2, scaled back by D^-1/2.

    Its sign pattern is the relaxed normalised cut; the top eigenvector (sqrt of the degrees, the
    same for every graph) is projected out so ARPACK only looks for the one that separates.
    """
    root = np.sqrt(degree)
    normalised = adjacency.copy()
    rows = np.repeat(np.arange(degree.size), np.diff(adjacency.indptr))
    normalised.data = normalised.data / (root[rows] * root[adjacency.indices])
    top = root / np.linalg.norm(root)
    n = degree.size
    op = LinearOperator((n, n), matvec=lambda x: normalised @ x - top * (top @ x), dtype=np.float64)
    # a fixed start vector: the same graph gives the same vector, run after run
    start = np.random.default_rng(0).standard_normal(n)
    # ARPACK's small dense steps gain nothing from BLAS threads, and on a busy machine wait for them
    # (measured: 72 ms instead of a few for a 1,300-node component at load 7 on 2 cores)
    with _blas().limit(limits=1, user_api="blas"):
        try:
            _, vectors = eigsh(op, k=1, which="LA", v0=start, tol=1e-3, maxiter=20 * n)
            vector = vectors[:, 0]
        except ArpackNoConvergence as exc:
            vector = exc.eigenvectors[:, 0] if exc.eigenvectors.shape[1] else np.zeros(n)
        except ArpackError:
            vector = np.zeros(n)
    return vector / root


@cache
def _blas() -> ThreadpoolController:
    """The BLAS thread pools, found once (finding them scans the loaded libraries)."""
    return ThreadpoolController()


def _best_cut(adjacency: csr_matrix, customer: np.ndarray, *, min_size: int) -> tuple[np.ndarray, float] | None:
    """The sweep cut of lowest conductance that leaves at least `min_size` customers on either side.

    Nodes sorted by their Fiedler value (ties by index), every prefix is a candidate side; its
    volume, the weight inside it and so the weight crossing it come from cumulative sums, one pass.
    Returns (mask of the prefix side, its conductance), or None when no cut keeps both sides rings.
    """
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    n = degree.size
    if n < 2 or not (degree > 0).all():
        return None
    fiedler = _fiedler(adjacency, degree)
    # values equal up to rounding are one position: the order must not depend on the last bits
    order = np.lexsort((np.arange(n), np.round(fiedler, 9)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    coo = adjacency.tocoo()
    # an entry is inside prefix k once both its ends are: W holds each edge twice, as vol does
    inside = np.bincount(np.maximum(rank[coo.row], rank[coo.col]), weights=coo.data, minlength=n).cumsum()
    volume = degree[order].cumsum()
    total = volume[-1]
    crossing = volume - inside
    smaller = np.minimum(volume, total - volume)
    cust = customer[order]
    counted = np.flatnonzero(cust >= 0)
    _, first = np.unique(cust[counted], return_index=True)
    _, last_rev = np.unique(cust[counted][::-1], return_index=True)
    last = counted.size - 1 - last_rev
    before = np.bincount(counted[first], minlength=n).cumsum()
    n_customers = first.size
    after = n_customers - np.bincount(counted[last], minlength=n).cumsum()
    valid = (before >= min_size) & (after >= min_size) & (smaller > 0)
    if not valid.any():
        return None
    conductance = np.full(n, np.inf)
    conductance[valid] = crossing[valid] / smaller[valid]
    k = int(np.argmin(conductance))
    side = np.zeros(n, dtype=bool)
    side[order[: k + 1]] = True
    return side, float(conductance[k])


def communities(
    adjacency: csr_matrix,
    customer: np.ndarray,
    *,
    min_size: int,
    max_conductance: float = MAX_CONDUCTANCE,
) -> np.ndarray:
    """Community label of every node of a weighted undirected graph: components, cut where thin.

    `adjacency` is symmetric with non-negative weights; `customer[i]` is node i's independent
    customer (an integer code: accounts of one organisation share one) or -1 for a node that does
    not count towards a ring's size (a shared value, an account too weakly linked to be a member).
    Each connected component is cut in two by its lowest-conductance spectral sweep cut while that
    conductance is below `max_conductance` and both sides keep `min_size` customers, and each side
    again: two campaigns joined by one shared value or one bridging account come apart, one dense
    group does not, and a fringe too small to be a ring stays with the community it hangs on to.
    Labels are a function of the graph as indexed: callers index nodes in a canonical (sorted) order.
    """
    if adjacency.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    twin, adjacency, customer = _without_twins(adjacency, customer)
    n = adjacency.shape[0]
    _, labels = connected_components(adjacency, directed=False)
    labels = labels.astype(np.int64)
    counted = customer >= 0
    # only a component with two rings' worth of customers can be cut
    pairs = np.unique(np.stack([labels[counted], customer[counted]]), axis=1)
    n_labels = int(labels.max()) + 1
    per_label = np.bincount(pairs[0], minlength=n_labels)
    # nor a star (one node holding all the others: one shared value after twins merged, one ring
    # of the merge that overlaps no other): every cut of it crosses all of the smaller side
    row = np.repeat(np.arange(n), np.diff(adjacency.indptr))
    edges = np.bincount(labels[row], minlength=n_labels)
    hub = np.zeros(n_labels, dtype=np.int64)
    np.maximum.at(hub, labels, np.diff(adjacency.indptr))
    size = np.bincount(labels, minlength=n_labels)
    star = (edges == 2 * (size - 1)) & (hub == size - 1)
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(size)[:-1]
    todo = [
        part
        for part in np.split(order, bounds)
        if per_label[labels[part[0]]] >= 2 * min_size and not star[labels[part[0]]]
    ]
    next_label = n_labels
    while todo:
        nodes = todo.pop()
        sub = adjacency if nodes.size == n else adjacency[nodes][:, nodes].tocsr()
        cut = _best_cut(sub, customer[nodes], min_size=min_size)
        if cut is None or cut[1] >= max_conductance:
            continue
        side = nodes[cut[0]]
        labels[side] = next_label
        next_label += 1
        todo.extend(
            part
            for part in (side, nodes[~cut[0]])
            if np.unique(customer[part][customer[part] >= 0]).size >= 2 * min_size
        )
    return labels[twin]


def _without_twins(adjacency: csr_matrix, customer: np.ndarray) -> tuple[np.ndarray, csr_matrix, np.ndarray]:
    """Merge the non-customer nodes with identical weighted neighbourhoods into one node.

    A ring's template keys are held by the same members (every band of every prompt of its fixed
    wrapper): as one node of summed weight they cut exactly as they did apart, at a fraction of the
    spectral work. Returns each original node's merged index, the merged graph and its customers.
    """
    n = adjacency.shape[0]
    adjacency = adjacency.tocsr()
    adjacency.sort_indices()
    # a row's fingerprint: its weights against fixed random numbers (same rows, same bits)
    fingerprint = adjacency @ np.random.default_rng(0).random(n)
    free = customer < 0
    key = np.where(free, 0, np.arange(n) + 1)
    _, first, twin = np.unique(
        np.stack([key, fingerprint.view(np.int64)]), axis=1, return_index=True, return_inverse=True
    )
    twin = twin.ravel()
    if first.size == n:
        return np.arange(n), adjacency, customer
    merge = csr_matrix((np.ones(n), (np.arange(n), twin)), shape=(n, first.size))
    return twin, (merge.T @ adjacency @ merge).tocsr(), customer[first]


def _codes(values: pl.Series) -> np.ndarray:
    """Integer codes of string values, by sorted value: the same values get the same codes."""
    return values.rank("dense").cast(pl.Int64).to_numpy() - 1


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


def _one_phrasing(
    e: pl.DataFrame,
    members: pl.DataFrame,
    held: pl.DataFrame,
    key_users: pl.DataFrame,
    *,
    min_suspicious_share: float,
    wrapping: pl.Series | None = None,
) -> pl.Series:
    """The rings of `members` (account_id, ring_id) whose members share nothing but one popular phrasing.

    `e` is the edges (account_id, dim, value, _a), `held` (dim, value, _n_sus) how many suspicious
    accounts hold each value, `key_users` (value, n_accounts) how many accounts of the population
    used each wrapper key at all, reused or not. Wrapper keys that exactly the same members hold
    are the bands of what they share: up to a prompt's worth of them (1 / ONCE_WEIGHT) is one
    phrasing. A ring whose whole evidence is one phrasing, used by more accounts than are suspicious
    (fewer than `min_suspicious_share` of its users are), is a popular question or an app's phrase
    that a few users happened to send twice (seeds 505, 6161, 7171: rings of 3-5 app users or
    students, 7-8 keys and nothing else in common); a campaign's members share several wrappers, a
    wrapper and infrastructure, or a wrapper mostly suspicious accounts use (seed 6262's three heavy
    accounts share only one, the other campaigns' too). Nor is a ring most of whose members are
    `wrapping` (send most of their prompts in one template: a campaign wraps every question, seed
    1202's heavy trio shares only the popular agentic wrapper; the app users sent their phrase
    twice among 5-20 prompts). Judged per ring, not per member: a member tied to a big ring by one
    wrapper of many is a member.
    """
    shared = (
        e.join(members.select(s.ACCOUNT_ID, RING_ID), on=s.ACCOUNT_ID)
        .group_by(RING_ID, DIM, VALUE)
        .agg(pl.col("_a").sort().cast(pl.String).str.join(",").alias("_holders"), pl.len().alias("_m"))
        .filter(pl.col("_m") >= 2)
    )
    is_key = pl.col(DIM) == TEMPLATE
    phrasings = (
        shared.filter(is_key)
        .join(key_users.select(VALUE, pl.col(N_ACCOUNTS).alias("_users")), on=VALUE, how="left")
        .join(held.select(DIM, VALUE, "_n_sus"), on=[DIM, VALUE], how="left")
        .group_by(RING_ID, "_holders")
        .agg(
            pl.max_horizontal(pl.lit(1.0), pl.len() * ONCE_WEIGHT).first().alias("_p"),
            (pl.col("_n_sus") < min_suspicious_share * pl.col("_users").fill_null(0)).all().alias("_popular"),
        )
    )
    pieces = pl.concat(
        [
            shared.filter(~is_key)
            .group_by(RING_ID)
            .agg(pl.len().cast(pl.Float64).alias("_p"), pl.lit(False).alias("_popular")),
            phrasings.select(RING_ID, "_p", "_popular"),
        ]
    )
    one = pieces.group_by(RING_ID).agg(pl.col("_p").sum(), pl.col("_popular").all())
    if wrapping is not None:
        wraps = members.group_by(RING_ID).agg(
            (pl.col(s.ACCOUNT_ID).is_in(wrapping.implode()).mean() >= 0.5).alias("_wraps")
        )
        one = one.join(wraps, on=RING_ID).filter(~pl.col("_wraps"))
    return one.filter((pl.col("_p") <= 1.0) & pl.col("_popular")).get_column(RING_ID)


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
    max_conductance: float = MAX_CONDUCTANCE,
    key_users: pl.DataFrame | None = None,
    wrapping: pl.Series | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Group suspicious accounts into rings.

    `links` holds (account_id, dim, value) for the whole population, or only for the suspicious
    accounts when `popularity` (dim, value, n_accounts: how many accounts of the whole population
    hold each value) is given — the cheap form when the population is large. An account links
    by wrapper keys only when at least `min_wrapper_share` of its own are ring evidence (see
    `_own_wrappers_unlinked`). A ring is a community of the account-value graph (weighted like
    `min_degree`), not a whole component: two campaigns bridged by a value or an account are two
    rings (`communities`, `max_conductance`). With `key_users` (value, n_accounts: how many accounts
    used each wrapper key at all), a ring sharing nothing but one popular phrasing is none, unless
    most of its members are `wrapping` (`_one_phrasing`). Returns
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
    weights = e.get_column("_w").to_numpy()
    half = coo_matrix((weights, (rows, cols)), shape=(n_a + n_v, n_a + n_v))
    # an account tied to the others by a single shared value may be a coincidence (one proxy
    # address, one common phrase); ring members must share at least `min_degree` values (a key a
    # targeted account used only once counts ONCE_WEIGHT)
    degree = e.group_by(s.ACCOUNT_ID).agg(pl.col("_w").sum().alias("_deg"))
    accounts_of = (
        a_index.join(degree, on=s.ACCOUNT_ID)
        .join(held.select(s.ACCOUNT_ID, "_org").unique(s.ACCOUNT_ID), on=s.ACCOUNT_ID)
        .sort("_a")
    )
    member = (accounts_of.get_column("_deg") >= min_degree).to_numpy()
    customer = np.full(n_a + n_v, -1, dtype=np.int64)
    customer[:n_a] = np.where(member, _codes(accounts_of.get_column("_org")), -1)
    labels = communities((half + half.T).tocsr(), customer, min_size=min_size, max_conductance=max_conductance)
    comp = accounts_of.with_columns(pl.Series("_c", labels[:n_a])).filter(pl.Series(member))
    members = _rings_of(comp, min_size=min_size)
    if key_users is not None:
        popular = _one_phrasing(
            e, members, popularity, key_users, min_suspicious_share=min_suspicious_share, wrapping=wrapping
        )
        members = members.filter(~pl.col(RING_ID).is_in(popular.implode()))
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
    concerted: pl.Series | None = None,
    min_concerted_shared: int | None = None,
    recruits: pl.Series | None = None,
    min_recruit_shared: int | None = None,
    phrases: pl.DataFrame | None = None,
    texts: pl.DataFrame | None = None,
    min_concerted_phrases: int | None = None,
    flagged: pl.Series | None = None,
    min_suspicious_share: float = 0.5,
    min_size: int = 3,
    max_conductance: float = MAX_CONDUCTANCE,
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
    at most 8 keys with anyone) still links nobody. Communities of those pairwise links, weighted by
    the keys each pair shares (`communities`), of at least `min_size` independent customers, are rings.
    With `windows` (account_id, active_windows: masks of the recent ticks each account was active in,
    features/synchrony.py) and `min_co_active_shared`, two accounts without a two-prompt partner are
    also linked by that many keys when they were active in at least `min_co_active_ticks` common
    ticks and the link closes a triangle of such links (see `_co_active_links`). With `concerted` (the
    accounts whose candidacy began lately after a past of other activity) and `min_concerted_shared`,
    two such accounts are linked by that many keys when the link closes a triangle of such links and
    neither or both of them are already `flagged` (see `_concerted_links`). With `recruits` (accounts
    whose candidacy began lately without a past) and `min_recruit_shared`, a recruit sharing that many
    keys with a `concerted` account counts as concerted too (see `_vouched_recruits`). With `phrases`
    (account_id, value: the phrases of their targeted texts that can be evidence), `texts`
    (account_id, value: those texts' hashes) and `min_concerted_phrases`, two concerted accounts
    sharing that many phrases and no text are linked as if by `min_concerted_shared` keys (see
    `_phrase_pairs`).
    Returns (account_id, ring_id, ring_size) and (ring_id, dim, value, n_members) like
    `candidate_rings`.
    """
    keys = keys.select(s.ACCOUNT_ID, VALUE).unique()
    use_phrases = (
        phrases is not None
        and texts is not None
        and min_concerted_phrases is not None
        and concerted is not None
        and min_concerted_shared is not None
    )
    held = (
        keys.group_by(VALUE)
        .agg(pl.len().alias("_n_sus"))
        .join(popularity.select(VALUE, N_ACCOUNTS), on=VALUE)
        .filter((pl.col("_n_sus") >= 2) & (pl.col("_n_sus") >= min_suspicious_share * pl.col(N_ACCOUNTS)))
    )
    edges = keys.join(held.select(VALUE), on=VALUE)
    phrased = phrases.select(s.ACCOUNT_ID, VALUE).unique() if use_phrases and phrases is not None else None
    if edges.height == 0 and (phrased is None or phrased.height == 0):
        return _no_rings()
    accounts = [edges.select(s.ACCOUNT_ID), *([phrased.select(s.ACCOUNT_ID)] if phrased is not None else [])]
    a_index = pl.concat(accounts).unique().sort(s.ACCOUNT_ID).with_row_index("_a")
    v_index = edges.select(VALUE).unique().sort(VALUE).with_row_index("_v")
    e = edges.join(a_index, on=s.ACCOUNT_ID).join(v_index, on=VALUE)
    n_a = a_index.height
    incidence = _incidence(e.get_column("_a").to_numpy(), e.get_column("_v").to_numpy(), n_a)
    shared = (incidence @ incidence.T).tocoo()
    # the weight a concerted link counts with: its shared keys, or min_concerted_shared for a phrase link
    weight = shared.data
    if phrased is not None and texts is not None and min_concerted_phrases is not None:
        by_phrase = _phrase_pairs(phrased, texts, a_index, min_shared=min_concerted_phrases)
        # the pairs of either kind as one structure (a phrase-only pair shares 0 keys)
        union = (shared.tocsr() + by_phrase).tocoo()
        keyed = _entries(shared.tocsr(), union.row, union.col)
        is_phrase = _entries(by_phrase, union.row, union.col) > 0
        shared = coo_matrix((keyed, (union.row, union.col)), shape=(n_a, n_a))
        weight = np.where(is_phrase, np.maximum(keyed, min_concerted_shared or 0), keyed)
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
    if concerted is not None and min_concerted_shared is not None:
        ids = a_index.get_column(s.ACCOUNT_ID)
        fresh = ids.is_in(concerted.implode()).to_numpy()
        if recruits is not None and min_recruit_shared is not None:
            fresh |= _vouched_recruits(shared, fresh, ids.is_in(recruits.implode()).to_numpy(), min_recruit_shared)
        is_flagged = ids.is_in(flagged.implode()).to_numpy() if flagged is not None else np.zeros(n_a, dtype=bool)
        concert = coo_matrix((weight, (shared.row, shared.col)), shape=(n_a, n_a))
        pair |= _concerted_links(concert, fresh, is_flagged, min_shared=min_concerted_shared)
    if not pair.any():
        return _no_rings()
    # two accounts sharing many keys are tied more closely than two sharing a prompt's worth
    half = coo_matrix((weight[pair], (shared.row[pair], shared.col[pair])), shape=(n_a, n_a))
    linked = np.zeros(n_a, dtype=bool)
    linked[shared.row[pair]] = True
    linked[shared.col[pair]] = True
    comp = (
        a_index.with_columns(pl.Series("_linked", linked))
        .join(orgs.select(s.ACCOUNT_ID, pl.col(VALUE).alias("_org")), on=s.ACCOUNT_ID, how="left")
        .with_columns(pl.coalesce("_org", s.ACCOUNT_ID).alias("_org"))
        .sort("_a")
    )
    customer = np.where(linked, _codes(comp.get_column("_org")), -1)
    labels = communities((half + half.T).tocsr(), customer, min_size=min_size, max_conductance=max_conductance)
    members = _rings_of(comp.with_columns(pl.Series("_c", labels)).filter("_linked"), min_size=min_size)
    if members.height == 0:
        return _no_rings()
    return members, _evidence(e.with_columns(pl.lit(TEMPLATE).alias(DIM)), members, min_members=2)


def _incidence(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> csr_matrix:
    """A 0/1 account-by-value matrix of the (row, col) pairs (distinct pairs)."""
    n_cols = int(cols.max()) + 1 if cols.size else 0
    return csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n_rows, n_cols))


def _entries(matrix: csr_matrix, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """The values of `matrix` at (row, col), zeros where it holds none."""
    if row.size == 0:
        return np.zeros(0)
    return np.asarray(matrix[row, col]).ravel()


def _phrase_pairs(phrases: pl.DataFrame, texts: pl.DataFrame, a_index: pl.DataFrame, *, min_shared: int) -> csr_matrix:
    """Pairs of `a_index` accounts (0/1, both orders) sharing `min_shared` or more `phrases` and no `texts`.

    An evasive ring's paraphrased wrappers match no MinHash band for its first hour (each request a
    fresh random template of its family, typos and homoglyphs on top), but its members' wrappers
    share whole clauses ("you are a strict grader"); look-alikes share clauses mostly by sending the
    same text (a corpus question, an app's fixed prompt), which says nothing of a ring, so a pair that
    shares a text is no phrase link at all.
    """
    n_a = a_index.height

    def matrix(rows: pl.DataFrame) -> csr_matrix:
        e = rows.select(s.ACCOUNT_ID, VALUE).unique().join(a_index, on=s.ACCOUNT_ID)
        codes = e.get_column(VALUE).rank("dense").cast(pl.Int64).to_numpy() - 1
        return _incidence(e.get_column("_a").to_numpy(), codes, n_a)

    by_phrase, by_text = matrix(phrases), matrix(texts)
    shared = (by_phrase @ by_phrase.T).tocoo()
    common_text = by_text @ by_text.T
    ok = (shared.row != shared.col) & (shared.data >= min_shared)
    ok &= _entries(common_text.tocsr(), shared.row, shared.col) == 0
    return csr_matrix((np.ones(int(ok.sum())), (shared.row[ok], shared.col[ok])), shape=(n_a, n_a))


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
    return _closing_triangles(shared, co, n=partnered.size)


def _concerted_links(shared: coo_matrix, fresh: np.ndarray, flagged: np.ndarray, *, min_shared: int) -> np.ndarray:
    """Which entries of `shared` (pairs' shared key counts) are concerted-onset links.

    An evasive ring's aged accounts share one prompt's worth of wrapper keys pairwise (7-8) for its
    first hour, as app users and students sharing a popular phrasing do. What sets the ring apart is
    when its accounts turned into candidates: together, at the campaign's start, after a past of
    ordinary use; look-alikes turn into candidates at unrelated times. `fresh` marks the accounts
    whose candidacy began lately after such a past (detector/engine.py `_concerted`); a link needs
    two fresh ends sharing `min_shared` keys and a third fresh account linked the same way to both
    (one coincidental pair is not a ring). The rule surfaces a ring nobody has flagged yet: a link
    never ties an account that is not `flagged` to one that is, nor involves an unflagged account
    sharing `min_shared` keys with a flagged one (a flagged ring's fringe): replayed, seed 7's app
    user who turned candidate as its evasive ring started was tied to two flagged members by 7 keys
    each, then to two newcomers of the ring, and held for an hour; a flagged ring grows by the
    stronger rules. Measured on the
    per-tick recordings of seeds 404, 808, 1303 and 2024: the triangle surfaces the evasive rings of
    404 and 2024 within the hour and adds no non-attacker account to an early ring.
    """
    upper = shared.row < shared.col
    strong_enough = upper & (shared.data >= min_shared)
    # an unflagged account that shares as much with a flagged one is a flagged ring's fringe
    fringe = np.zeros(fresh.size, dtype=bool)
    across = strong_enough & (flagged[shared.row] != flagged[shared.col])
    fringe[np.where(flagged[shared.row[across]], shared.col[across], shared.row[across])] = True
    fresh = fresh & ~fringe
    co = strong_enough & fresh[shared.row] & fresh[shared.col] & (flagged[shared.row] == flagged[shared.col])
    if not co.any():
        return co
    return _closing_triangles(shared, co, n=fresh.size)


def _vouched_recruits(shared: coo_matrix, fresh: np.ndarray, recruit: np.ndarray, min_shared: int) -> np.ndarray:
    """Which `recruit` accounts share at least `min_shared` keys (`shared`) with a `fresh` one.

    A campaign on aged accounts switches them to harvesting together, but an aged account used a few
    times a day may show no past in the stream (first seen as the campaign starts): its candidacy
    began with the others', with no ordinary use before it to prove a switch. Two prompts' worth of
    wrapper keys shared with an account that did switch after a past (more than one phrasing in
    common: a paraphrasing ring's second request) vouches for it; look-alikes that share two prompts
    (two app users sending the same corpus questions) seldom do so with an account that switched in
    the same hour, and the vouched recruit still needs a concerted triangle. Seed 808: the evasive
    ring's first triangle (7:15, 55 minutes in) has one corner with no past, tied by 10 keys to a
    switching member; without it the ring waited for a 16-key pair (7:30, 69 minutes). Replayed on
    20 seeds it changes nothing else but two evasive members flagged earlier (5151, 5353).
    """
    strong = (shared.row != shared.col) & (shared.data >= min_shared)
    vouched = np.zeros(recruit.size, dtype=bool)
    vouched[shared.row[strong & recruit[shared.row] & fresh[shared.col]]] = True
    return vouched


def _closing_triangles(shared: coo_matrix, co: np.ndarray, *, n: int) -> np.ndarray:
    """The links `co` (a mask over `shared`'s entries, n accounts) that close a triangle of such links."""
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
