"""Per-account volume features as mergeable partial aggregates.

Streaming and replay feed events tick by tick; a tick's events are reduced to per-account
partials (`volume_partials`), merged into the running state (`merge_volume_state`), and the
features are finalised from the state (`volume_features`). Sums, maxima and distinct sets
merge exactly, so the result does not depend on where batch boundaries fell.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from core import schema as s

# Partial-aggregate (state) columns.
N_EVENTS = "n_events"
N_ERRORS = "n_errors"
N_THROTTLED = "n_throttled"
PROMPT_TOKENS_SUM = "prompt_tokens_sum"
COMPLETION_TOKENS_SUM = "completion_tokens_sum"
FIRST_TS = "first_ts"
LAST_TS = "last_ts"
N_GAPS = "n_gaps"
# gaps in whole deciseconds: integer sums merge exactly in any order, floats would not
GAP_SUM = "gap_sum_ds"
GAP_SQ_SUM = "gap_sq_sum_ds2"
ACTIVE_BUCKETS = "active_buckets"
PEAK_BUCKET_EVENTS = "peak_bucket_events"
HOUR_COLS = tuple(f"hour_{h:02d}" for h in range(24))

# Distinct-value dimensions kept as (account, value) pairs.
IP_PREFIX = "ip_prefix"
DISTINCT_DIMS = (s.IP, IP_PREFIX, s.USER_AGENT, s.MODEL, s.ENDPOINT)
DIM = "dim"
VALUE = "value"

# Finalised feature columns (model inputs), named after what they measure.
EVENTS_PER_ACTIVE_HOUR = "events_per_active_hour"
PEAK_BURST_RATIO = "peak_burst_ratio"
INTER_ARRIVAL_REGULARITY = "inter_arrival_regularity"
HOUR_OF_DAY_ENTROPY = "hour_of_day_entropy"
COMPLETION_PROMPT_RATIO = "completion_prompt_ratio"
ERROR_RATE = "error_rate"
IP_DIVERSITY = "ip_diversity"
PREFIX_DIVERSITY = "prefix_diversity"
USER_AGENT_COUNT = "user_agent_count"
MODEL_COUNT = "model_count"
ENDPOINT_COUNT = "endpoint_count"
VOLUME_FEATURES = (
    EVENTS_PER_ACTIVE_HOUR,
    PEAK_BURST_RATIO,
    INTER_ARRIVAL_REGULARITY,
    HOUR_OF_DAY_ENTROPY,
    COMPLETION_PROMPT_RATIO,
    ERROR_RATE,
    IP_DIVERSITY,
    PREFIX_DIVERSITY,
    USER_AGENT_COUNT,
    MODEL_COUNT,
    ENDPOINT_COUNT,
)

_SUMMED = (
    N_EVENTS,
    N_ERRORS,
    N_THROTTLED,
    PROMPT_TOKENS_SUM,
    COMPLETION_TOKENS_SUM,
    N_GAPS,
    GAP_SUM,
    GAP_SQ_SUM,
    ACTIVE_BUCKETS,
    *HOUR_COLS,
)

VOLUME_STATE_SCHEMA: dict[str, pl.DataType] = {
    s.ACCOUNT_ID: pl.String(),
    **{
        c: pl.Int64()
        for c in (
            N_EVENTS,
            N_ERRORS,
            N_THROTTLED,
            PROMPT_TOKENS_SUM,
            COMPLETION_TOKENS_SUM,
            N_GAPS,
            ACTIVE_BUCKETS,
            PEAK_BUCKET_EVENTS,
            GAP_SUM,
            GAP_SQ_SUM,
            *HOUR_COLS,
        )
    },
    FIRST_TS: s.TS_DTYPE,
    LAST_TS: s.TS_DTYPE,
}
DISTINCT_STATE_SCHEMA: dict[str, pl.DataType] = {s.ACCOUNT_ID: pl.String(), DIM: pl.String(), VALUE: pl.String()}


def ip_prefix(ip: pl.Expr) -> pl.Expr:
    """The network an address sits in: IPv4 /24, IPv6 /64 (first four groups, uncompressed form aside)."""
    v4 = ip.str.replace(r"\.\d+$", ".0/24")
    v6 = ip.str.extract(r"^([0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f]*)", 1) + pl.lit("::/64")
    return pl.when(ip.str.contains(":")).then(v6).otherwise(v4)


def volume_partials(
    events: pl.LazyFrame, last_seen: pl.LazyFrame, *, every: str, group_by: str | None = None
) -> pl.LazyFrame:
    """Reduce one tick's events to per-account partial aggregates.

    `last_seen` (account_id, last_ts) carries each account's previous event time, so the first
    inter-arrival gap of the tick is measured from the previous tick's last event. With
    `group_by` (a tick column), several ticks' events are reduced in one pass to per (account,
    tick) partials equal to what each tick alone would give, its first gap measured from the
    account's latest event of the earlier ticks.
    """
    by = [s.ACCOUNT_ID] if group_by is None else [s.ACCOUNT_ID, group_by]
    ev = events.select(*by, s.TS, s.STATUS, s.PROMPT_TOKENS, s.COMPLETION_TOKENS).sort(*by, s.TS)
    # rows are in (account, tick, ts) order, so an account's and a tick's rows are runs: shifts
    # masked at the run starts do what window expressions (`over`) would, at a fraction of the cost
    new_account = pl.col(s.ACCOUNT_ID).ne_missing(pl.col(s.ACCOUNT_ID).shift(1)).fill_null(True)
    new_run = new_account
    if group_by is not None:
        new_run = new_run | pl.col(group_by).ne_missing(pl.col(group_by).shift(1)).fill_null(True)
    ms = pl.col(s.TS).dt.epoch("ms")
    # the latest event of the account's earlier ticks in this pass, for a tick's first gap: a running
    # max over the account's rows (late events make it more than the previous row), as one global
    # cum_max of the times offset by the account's run number, so it never crosses an account
    span = ms.max() - ms.min() + 1
    run_no = new_account.cast(pl.Int64).cum_sum()
    running_max = (run_no * span + ms - ms.min()).cum_max()
    # the activity buckets of a run are runs too (rows in time order): a bucket's row count is the
    # position of its last row counted from its first
    bucket = pl.col(s.TS).dt.truncate(every)
    new_bucket = new_run | bucket.ne_missing(bucket.shift(1)).fill_null(True)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    ev = ev.with_columns(
        pl.when(~new_run).then(ms.shift(1)).alias("_prev_in_tick"),
        pl.when(~new_account).then(running_max.shift(1) - run_no * span + ms.min()).alias("_earlier"),
        new_bucket.alias("_new_bucket"),
        (row - pl.when(new_bucket).then(row).forward_fill() + 1).alias("_in_bucket"),
        pl.col(s.TS).dt.hour().alias("_hour"),
    )
    prev = last_seen.select(s.ACCOUNT_ID, pl.col(LAST_TS).dt.epoch("ms").alias("_prev_ts"))
    gaps = ev.join(prev, on=s.ACCOUNT_ID, how="left").with_columns(
        ((ms - pl.coalesce("_prev_in_tick", pl.max_horizontal("_prev_ts", "_earlier"))) // 100).alias("_gap")
    )
    hour = pl.col("_hour")
    per_account = gaps.group_by(by).agg(
        pl.len().cast(pl.Int64).alias(N_EVENTS),
        (pl.col(s.STATUS) >= 400).sum().cast(pl.Int64).alias(N_ERRORS),
        (pl.col(s.STATUS) == 429).sum().cast(pl.Int64).alias(N_THROTTLED),
        pl.col(s.PROMPT_TOKENS).sum().cast(pl.Int64).alias(PROMPT_TOKENS_SUM),
        pl.col(s.COMPLETION_TOKENS).sum().cast(pl.Int64).alias(COMPLETION_TOKENS_SUM),
        pl.col("_gap").count().cast(pl.Int64).alias(N_GAPS),
        pl.col("_gap").sum().alias(GAP_SUM),
        (pl.col("_gap") ** 2).sum().alias(GAP_SQ_SUM),
        pl.col(s.TS).min().alias(FIRST_TS),
        pl.col(s.TS).max().alias(LAST_TS),
        pl.col("_new_bucket").sum().cast(pl.Int64).alias(ACTIVE_BUCKETS),
        pl.col("_in_bucket").max().cast(pl.Int64).alias(PEAK_BUCKET_EVENTS),
        *[(hour == h).sum().cast(pl.Int64).alias(c) for h, c in enumerate(HOUR_COLS)],
    )
    return per_account.select(*by[1:], *(pl.col(c).cast(dt) for c, dt in VOLUME_STATE_SCHEMA.items()))


def distinct_partials(events: pl.LazyFrame, *, group_by: str | None = None) -> pl.LazyFrame:
    """Distinct (account, dimension, value) triples seen in a tick (IPs, /24s, agents, models, endpoints).

    With `group_by` (a tick column), several ticks at once: distinct per (account, tick).
    """
    by = [s.ACCOUNT_ID] if group_by is None else [group_by, s.ACCOUNT_ID]
    ev = events.with_columns(ip_prefix(pl.col(s.IP)).alias(IP_PREFIX))
    parts = [
        ev.select(*by, pl.lit(d).alias(DIM), pl.col(d).cast(pl.String).alias(VALUE)).drop_nulls(VALUE).unique()
        for d in DISTINCT_DIMS
    ]
    return pl.concat(parts)


PAYMENT = "payment_fingerprint"
SIGNUP_PREFIX = "signup_prefix"
EMAIL_SHAPE = "email_shape"
# the organisation an account declares: not a link (a customer's own accounts are not a ring) but
# what tells a customer's own shared values from values shared between independent accounts
ORG = "org"
ACCOUNT_DIMS = (PAYMENT, SIGNUP_PREFIX, EMAIL_SHAPE, ORG)


def account_links(accounts: pl.LazyFrame, *, carry: tuple[str, ...] = ()) -> pl.LazyFrame:
    """Distinct (account, dimension, value) triples from account events (CONTRACT.md section 2).

    `carry`: columns of the events kept beside each triple (e.g. `ts`, to apply them in event time).
    """
    keep = [s.ACCOUNT_ID, *carry]
    parts = [
        accounts.select(*keep, pl.lit(PAYMENT).alias(DIM), pl.col(s.PAYMENT_FINGERPRINT).alias(VALUE)),
        accounts.select(*keep, pl.lit(SIGNUP_PREFIX).alias(DIM), ip_prefix(pl.col(s.SIGNUP_IP)).alias(VALUE)),
        # domain and local-part shape together: one alone is shared by millions of honest users
        accounts.select(
            *keep,
            pl.lit(EMAIL_SHAPE).alias(DIM),
            (pl.col(s.EMAIL_LOCAL_SHAPE) + pl.lit("@") + pl.col(s.EMAIL_DOMAIN)).alias(VALUE),
        ),
        accounts.select(*keep, pl.lit(ORG).alias(DIM), pl.col(s.ORG_ID).alias(VALUE)),
    ]
    return pl.concat(parts).drop_nulls(VALUE).unique()


def merge_volume_state(state: pl.LazyFrame, partials: pl.LazyFrame) -> pl.LazyFrame:
    """Merge partial aggregates into the running state; exact for sums, min, max."""
    return (
        pl.concat([state, partials])
        .group_by(s.ACCOUNT_ID)
        .agg(
            *[pl.col(c).sum() for c in _SUMMED],
            pl.col(PEAK_BUCKET_EVENTS).max(),
            pl.col(FIRST_TS).min(),
            pl.col(LAST_TS).max(),
        )
        .select(list(VOLUME_STATE_SCHEMA))
    )


def merge_distinct_state(state: pl.LazyFrame, partials: pl.LazyFrame) -> pl.LazyFrame:
    """Union of distinct (account, dimension, value) triples."""
    return pl.concat([state, partials]).unique()


def _entropy_of(cols: tuple[str, ...]) -> pl.Expr:
    total = pl.sum_horizontal(cols)
    terms = [
        pl.when(pl.col(c) > 0).then(-(pl.col(c) / total) * (pl.col(c) / total).log(2)).otherwise(0.0) for c in cols
    ]
    return pl.sum_horizontal(terms)


def volume_features(state: pl.LazyFrame, distinct: pl.LazyFrame, *, every: str) -> pl.LazyFrame:
    """Finalise per-account volume features from merged state (one row per account)."""
    bucket_hours = duration_of(every).total_seconds() / 3600.0
    counts = distinct.group_by(s.ACCOUNT_ID).agg(
        *[(pl.col(DIM) == d).sum().cast(pl.Int64).alias(f"_n_{d}") for d in DISTINCT_DIMS]
    )
    mean_gap = pl.col(GAP_SUM).cast(pl.Float64) / pl.col(N_GAPS)
    var_gap = (pl.col(GAP_SQ_SUM).cast(pl.Float64) / pl.col(N_GAPS) - mean_gap**2).clip(lower_bound=0.0)
    cv = var_gap.sqrt() / mean_gap
    n = pl.col(N_EVENTS).cast(pl.Float64)
    return (
        state.join(counts, on=s.ACCOUNT_ID, how="left")
        .with_columns(pl.col(f"_n_{d}").fill_null(0) for d in DISTINCT_DIMS)
        .with_columns(
            (n / (pl.col(ACTIVE_BUCKETS) * bucket_hours)).alias(EVENTS_PER_ACTIVE_HOUR),
            (pl.col(PEAK_BUCKET_EVENTS) / (n / pl.col(ACTIVE_BUCKETS))).alias(PEAK_BURST_RATIO),
            # 1 for perfectly even spacing (a cron job), towards 0 for bursty human sessions
            pl.when(pl.col(N_GAPS) >= 3)
            .then(1.0 / (1.0 + cv.fill_nan(0.0)))
            .otherwise(0.0)
            .alias(INTER_ARRIVAL_REGULARITY),
            _entropy_of(HOUR_COLS).alias(HOUR_OF_DAY_ENTROPY),
            (pl.col(COMPLETION_TOKENS_SUM) / (pl.col(PROMPT_TOKENS_SUM) + 1))
            .fill_null(0.0)
            .alias(COMPLETION_PROMPT_RATIO),
            (pl.col(N_ERRORS) / n).alias(ERROR_RATE),
            (pl.col(f"_n_{s.IP}") / n).alias(IP_DIVERSITY),
            (pl.col(f"_n_{IP_PREFIX}") / n).alias(PREFIX_DIVERSITY),
            pl.col(f"_n_{s.USER_AGENT}").cast(pl.Float64).alias(USER_AGENT_COUNT),
            pl.col(f"_n_{s.MODEL}").cast(pl.Float64).alias(MODEL_COUNT),
            pl.col(f"_n_{s.ENDPOINT}").cast(pl.Float64).alias(ENDPOINT_COUNT),
        )
        .with_columns(pl.col(list(VOLUME_FEATURES)).cast(pl.Float64).fill_nan(0.0).fill_null(0.0))
        .select(s.ACCOUNT_ID, N_EVENTS, FIRST_TS, LAST_TS, *VOLUME_FEATURES)
    )


def duration_of(every: str) -> timedelta:
    """Parse a simple Polars duration ('15m', '1h', '30s', '1d') into a timedelta."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    num, unit = every[:-1], every[-1:]
    if unit not in units or not num.isdigit() or int(num) <= 0:
        raise ValueError(f"unsupported duration {every!r}: use a positive number followed by s, m, h or d")
    return timedelta(**{units[unit]: int(num)})


def empty_volume_state() -> pl.LazyFrame:
    """State before any event."""
    return pl.LazyFrame(schema=VOLUME_STATE_SCHEMA)


def empty_distinct_state() -> pl.LazyFrame:
    """Distinct-value state before any event."""
    return pl.LazyFrame(schema=DISTINCT_STATE_SCHEMA)
