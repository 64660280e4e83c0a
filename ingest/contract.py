"""Decode and validate records against the data contract (CONTRACT.md sections 1 and 2).

Decoding is one C-speed `orjson.loads` per record (Kafka hands us records one by one anyway);
everything after it — type coercion, timestamp parsing, length and range checks — is vectorised
Polars over the whole batch. Every rejected record keeps its raw text and a reason.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from core import schema as s

REASON = "reason"
RAW = "raw"
SOURCE = "source"
REJECTED_SCHEMA = {RAW: pl.String(), REASON: pl.String(), SOURCE: pl.String()}


@dataclass(frozen=True)
class RecordKind:
    """What a contract record kind looks like: its schema, required fields and checks."""

    name: str
    schema: dict[str, pl.DataType]
    required: tuple[str, ...]
    string_fields: tuple[str, ...]
    int_fields: tuple[str, ...] = ()
    nonnegative_fields: tuple[str, ...] = ()
    id_fields: tuple[str, ...] = ()
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ip_fields: tuple[str, ...] = ()

    @functools.cached_property
    def known(self) -> frozenset[str]:
        """Contract field names (everything else is kept in `extra`); computed once, used per record."""
        return frozenset(k for k in self.schema if k != s.EXTRA)


EVENTS = RecordKind(
    name="api_request",
    schema=s.EVENT_SCHEMA,
    required=s.EVENT_REQUIRED,
    string_fields=s.EVENT_STRING_FIELDS,
    int_fields=s.EVENT_INT_FIELDS,
    nonnegative_fields=s.EVENT_NONNEGATIVE_INT_FIELDS,
    id_fields=(s.EVENT_ID, s.ACCOUNT_ID),
    ip_fields=(s.IP,),
)
ACCOUNT_EVENTS = RecordKind(
    name="account_event",
    schema=s.ACCOUNT_EVENT_SCHEMA,
    required=s.ACCOUNT_REQUIRED,
    string_fields=s.ACCOUNT_STRING_FIELDS,
    id_fields=(s.ACCOUNT_ID,),
    enums={s.TYPE: s.ACCOUNT_EVENT_TYPES, s.KYC_STATUS: s.KYC_STATUSES},
    ip_fields=(s.SIGNUP_IP,),
)

# RFC 3339 with a zone: `Z` or a numeric offset, optional fraction.
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%#z"
_IPV4 = r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$"
_IPV6 = r"^[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*(%[0-9A-Za-z]+)?$"
# Epoch milliseconds outside 1970..2200 are surely a unit mistake (seconds, microseconds).
_EPOCH_MS_MAX = 7_258_118_400_000


@dataclass
class ValidatedBatch:
    """The outcome of validating one batch: accepted rows (contract schema) and rejected records."""

    accepted: pl.DataFrame
    rejected: pl.DataFrame

    @property
    def n_read(self) -> int:
        return self.accepted.height + self.rejected.height


def empty_frame(kind: RecordKind) -> pl.DataFrame:
    """An empty frame with the kind's schema."""
    return pl.DataFrame(schema=kind.schema)


def empty_rejected() -> pl.DataFrame:
    """An empty frame of rejected records."""
    return pl.DataFrame(schema=REJECTED_SCHEMA)


def _decode_one(raw: bytes | str, kind: RecordKind, max_bytes: int) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one record and check JSON types; returns (row, None) or (None, reason)."""
    if len(raw) > max_bytes:
        return None, f"oversized record: {len(raw)} bytes > {max_bytes}"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return None, f"not a JSON object: got {type(obj).__name__}"
    known = kind.known
    row: dict[str, Any] = {}
    extra: dict[str, Any] | None = None
    for key, value in obj.items():
        if key not in known:
            if extra is None:
                extra = {}
            extra[key] = value
            continue
        if value is None:
            continue
        if key == s.TS:
            # bool is an int subclass in Python; true/false is never a timestamp
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                return None, f"wrong type: ts must be an RFC 3339 string or epoch ms, got {_tname(value)}"
        elif key in kind.int_fields:
            if isinstance(value, bool) or not isinstance(value, int):
                return None, f"wrong type: {key} must be an integer, got {_tname(value)}"
        elif not isinstance(value, str):
            return None, f"wrong type: {key} must be a string, got {_tname(value)}"
        row[key] = value
    for req in kind.required:
        if req not in row:
            return None, f"missing required field: {req}"
    ts = row[s.TS]
    if isinstance(ts, int):
        row["_ts_ms"] = ts
        row[s.TS] = None
    if extra is not None:
        row[s.EXTRA] = orjson.dumps(extra).decode()
    return row, None


def _tname(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", float: "number", int: "integer"}.get(
        type(value), type(value).__name__
    )


def decode_records(
    records: Sequence[bytes | str],
    *,
    kind: RecordKind = EVENTS,
    source: str = "",
    positions: Sequence[str] | None = None,
    max_bytes: int = 256 * 1024,
) -> ValidatedBatch:
    """Decode raw records (NDJSON lines or Kafka values) and validate them against the contract.

    `positions` names where each record came from (file:line, topic/partition@offset); rejected
    records carry it in `source` so an operator can find them.
    """
    rows: list[dict[str, Any]] = []
    bad_raw: list[str] = []
    bad_reason: list[str] = []
    bad_pos: list[str] = []
    good_raw: list[bytes | str] = []
    good_pos: list[str] = []
    pos = positions if positions is not None else [source] * len(records)
    for raw, where in zip(records, pos, strict=True):
        row, reason = _decode_one(raw, kind, max_bytes)
        if row is None:
            bad_raw.append(_text(raw))
            bad_reason.append(reason or "invalid")
            bad_pos.append(where)
        else:
            rows.append(row)
            good_raw.append(raw)
            good_pos.append(where)
    decoded_schema = {**{k: (pl.String() if k == s.TS else v) for k, v in kind.schema.items()}, "_ts_ms": pl.Int64()}
    frame = pl.from_dicts(rows, schema=decoded_schema) if rows else pl.DataFrame(schema=decoded_schema)
    frame = frame.with_columns(
        pl.Series(RAW, [_text(r) for r in good_raw], dtype=pl.String),
        pl.Series(SOURCE, good_pos, dtype=pl.String),
    )
    checked = validate_frame(frame, kind=kind, source=source)
    rejected = pl.concat(
        [
            pl.DataFrame({RAW: bad_raw, REASON: bad_reason, SOURCE: bad_pos}, schema=REJECTED_SCHEMA),
            checked.rejected,
        ]
    )
    return ValidatedBatch(accepted=checked.accepted, rejected=rejected)


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")


def validate_frame(frame: pl.DataFrame, *, kind: RecordKind = EVENTS, source: str = "") -> ValidatedBatch:
    """Vectorised value checks on an already typed frame (decoded JSON or Parquet).

    `frame` has the kind's columns (`ts` as string, datetime or integer epoch ms; an optional
    `_ts_ms` column of epoch-ms timestamps from JSON) and optionally `raw` (the original text).
    """
    cols = frame.columns
    if RAW not in cols:
        frame = frame.with_columns(
            pl.struct([c for c in cols if not c.startswith("_") and c != SOURCE]).struct.json_encode().alias(RAW)
        )
    missing = [c for c in kind.schema if c not in frame.columns]
    frame = frame.with_columns([pl.lit(None, dtype=kind.schema[c]).alias(c) for c in missing])
    frame = frame.with_columns(_parse_ts(frame, kind))

    # One reason per row: the first failing check wins (checks listed in the order a reader expects).
    checks: list[tuple[pl.Expr, pl.Expr | str]] = []
    for req in kind.required:
        if req == s.TS:
            continue
        checks.append((pl.col(req).is_null(), f"missing required field: {req}"))
    checks.append(
        (
            pl.col("_ts_raw_present") & pl.col(s.TS).is_null(),
            "unparseable ts: not RFC 3339 with a zone nor epoch milliseconds",
        )
    )
    checks.append((~pl.col("_ts_raw_present"), f"missing required field: {s.TS}"))
    for f in kind.id_fields:
        n = pl.col(f).str.len_chars()
        checks.append(((n < 1) | (n > s.ID_MAX_CHARS), f"invalid {f}: must be 1-{s.ID_MAX_CHARS} characters"))
    for f in kind.nonnegative_fields:
        checks.append((pl.col(f) < 0, f"invalid {f}: must be >= 0"))
    if s.STATUS in kind.int_fields:
        checks.append(
            (
                pl.col(s.STATUS).is_not_null() & ((pl.col(s.STATUS) < 100) | (pl.col(s.STATUS) > 599)),
                "invalid status: not an HTTP status code",
            )
        )
    for f, allowed in kind.enums.items():
        checks.append(
            (
                pl.col(f).is_not_null() & ~pl.col(f).is_in(list(allowed)),
                f"invalid {f}: must be one of {', '.join(allowed)}",
            )
        )
    for f in kind.ip_fields:
        ok = pl.col(f).str.contains(_IPV4) | pl.col(f).str.contains(_IPV6)
        checks.append((pl.col(f).is_not_null() & ~ok, f"invalid {f}: not an IPv4 or IPv6 address"))

    reason: pl.Expr = pl.lit(None, dtype=pl.String)
    for cond, why in reversed(checks):
        reason = pl.when(cond.fill_null(False)).then(pl.lit(why) if isinstance(why, str) else why).otherwise(reason)
    frame = frame.with_columns(reason.alias(REASON))
    where = pl.col(SOURCE) if SOURCE in frame.columns else pl.lit(source, dtype=pl.String)
    rejected = frame.filter(pl.col(REASON).is_not_null()).select(RAW, REASON, where.alias(SOURCE))
    accepted = frame.filter(pl.col(REASON).is_null()).select([pl.col(c).cast(dt) for c, dt in kind.schema.items()])
    return ValidatedBatch(accepted=accepted, rejected=rejected)


def _parse_ts(frame: pl.DataFrame, kind: RecordKind) -> list[pl.Expr]:
    ts = frame.schema[s.TS]
    epoch = pl.col("_ts_ms") if "_ts_ms" in frame.columns else pl.lit(None, dtype=pl.Int64)
    if ts == pl.String:
        parsed = pl.col(s.TS).str.to_datetime(_TS_FORMAT, strict=False, time_unit="ms", time_zone="UTC")
    elif isinstance(ts, pl.Datetime):
        parsed = pl.col(s.TS).dt.convert_time_zone("UTC") if ts.time_zone else pl.col(s.TS).dt.replace_time_zone("UTC")
        parsed = parsed.dt.cast_time_unit("ms")
    elif ts.is_integer():
        epoch = pl.coalesce(epoch, pl.col(s.TS).cast(pl.Int64))
        parsed = pl.lit(None, dtype=s.TS_DTYPE)
    else:
        parsed = pl.lit(None, dtype=s.TS_DTYPE)
    from_epoch = (
        pl.when(epoch.is_between(0, _EPOCH_MS_MAX))
        .then(epoch)
        .otherwise(None)
        .cast(pl.Datetime("ms"))
        .dt.replace_time_zone("UTC")
    )
    present = pl.col(s.TS).is_not_null() | epoch.is_not_null()
    return [
        present.alias("_ts_raw_present"),
        pl.coalesce(parsed, from_epoch).cast(s.TS_DTYPE).alias(s.TS),
    ]
