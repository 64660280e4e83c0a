"""Account-linking material: what accounts share that can tie them into a ring.

Link values are (account_id, dim, value) triples. Volume features contribute infrastructure
(IPs, /24s, user agents) and account events contribute payment instruments, signup networks and
e-mail shapes; this module adds behaviour: the prompt wrappers an account keeps coming back to.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from core import schema as s
from features.prompts import TARGETED_SHARE, TEMPLATE_KEYS
from features.volume import DIM, VALUE

TEMPLATE_KEY = "template_key"
KEY_COUNT = "key_n"
SAMPLE_RANK = "_sample_rank"
# link dimensions of prompt wrappers: a key the account reuses, and a key a targeted account used once
TEMPLATE = "template"
TEMPLATE_ONCE = "template_once"


def prompt_sample(
    events: pl.LazyFrame, *, per_account: int, group_by: str | Sequence[str] = s.ACCOUNT_ID
) -> pl.LazyFrame:
    """At most `per_account` distinct prompts per `group_by` group, chosen by a hash of event_id.

    Fingerprinting every prompt of a heavy account adds nothing its first few prompts of a tick
    do not already say; the hash makes the choice a function of the events alone, so any batch
    split samples the same events. `group_by` is the account, or (account, tick) to sample
    several ticks' events in one pass exactly as tick by tick.
    """
    by = [group_by] if isinstance(group_by, str) else list(group_by)
    h = pl.col(s.EVENT_ID).hash(seed=17)
    return (
        events.filter(pl.col(s.PROMPT).is_not_null())
        # the same text sent again (retries, pass@k runs of one question) is one prompt, not a template
        .filter(h == h.min().over(*by, s.PROMPT))
        .with_columns(h.rank("ordinal").over(*by).alias(SAMPLE_RANK))
        .filter(pl.col(SAMPLE_RANK) <= per_account)
        .drop(SAMPLE_RANK)
    )


def template_key_counts(
    fingerprinted: pl.LazyFrame, *, group_by: str | Sequence[str] = s.ACCOUNT_ID, first_row: str | None = None
) -> pl.LazyFrame:
    """Partials: (group_by..., template_key, count) from events carrying TEMPLATE_KEYS.

    With `first_row` (a row-number column of `fingerprinted`), each partial also carries the
    lowest row that used the key: a pointer to an example prompt, not a copy of its text.
    """
    by = [group_by] if isinstance(group_by, str) else list(group_by)
    rows = [pl.col(first_row)] if first_row else []
    return (
        fingerprinted.select(*by, *rows, pl.col(TEMPLATE_KEYS).alias(TEMPLATE_KEY))
        .explode(TEMPLATE_KEY)
        .drop_nulls(TEMPLATE_KEY)
        .group_by(*by, TEMPLATE_KEY)
        .agg(pl.len().cast(pl.Int64).alias(KEY_COUNT), *(r.min() for r in rows))
    )


def recurring_template_links(
    key_counts: pl.LazyFrame,
    prompts_per_account: pl.LazyFrame,
    *,
    early: tuple[int, float] = (2, 0.2),
    sustained: tuple[int, float] = (3, 0.05),
    targeted: tuple[int, float] | None = None,
    once_max_prompts: int = 12,
) -> pl.LazyFrame:
    """Link values for the wrappers an account reuses.

    A key is recurring when seen `early` = (count, share of the account's prompts) — quick to
    fire on a new account that wraps everything — or `sustained` — an account that hides a
    wrapper among ordinary prompts still reuses it. A human rarely sends one wrapper three times;
    a harvester wraps every question in one of a few. `prompts_per_account` is (account_id,
    n_prompts) of the sampled prompts, and `targeted_share` when `targeted` is given.

    A ring that paraphrases its wrapper, or whose accounts send a few requests an hour, shows
    few recurring keys per account for hours; what it shows at once is the same wrapper *across*
    accounts. So an account with at least `targeted` = (n_prompts, targeted share) — mostly
    capability-targeted prompts — also links by the keys it used once, as TEMPLATE_ONCE values:
    the same key as a "template" value for the popularity and components, but one prompt's band
    keys weigh as one piece of evidence (see detector/rings.py), so a single prompt that happens to
    share a common phrasing ties nobody. Only a young account (at most `once_max_prompts` sampled
    prompts) links this way: later its recurring keys speak for it, and a long-lived human who asks
    many coding questions shares a phrasing with some ring sooner or later.
    """
    count, n = pl.col(KEY_COUNT), pl.col("n_prompts")
    recurring = ((count >= early[0]) & (count >= early[1] * n)) | (
        (count >= sustained[0]) & (count >= sustained[1] * n)
    )
    dim = pl.lit(TEMPLATE)
    keep = recurring
    if targeted is not None:
        is_targeted = (n >= targeted[0]) & (n <= once_max_prompts) & (pl.col(TARGETED_SHARE) >= targeted[1])
        keep = recurring | is_targeted
        dim = pl.when(recurring).then(pl.lit(TEMPLATE)).otherwise(pl.lit(TEMPLATE_ONCE))
    return (
        key_counts.join(prompts_per_account, on=s.ACCOUNT_ID)
        .filter(keep)
        .select(s.ACCOUNT_ID, dim.alias(DIM), pl.col(TEMPLATE_KEY).cast(pl.String).alias(VALUE))
    )
