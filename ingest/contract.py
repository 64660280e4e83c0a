"""Decode and validate records against the data contract (CONTRACT.md sections 1 and 2).

Decoding is one C-speed `orjson.loads` per record (Kafka hands us records one by one anyway);
everything after it — type coercion, timestamp parsing, length and range checks — is vectorised
Polars over the whole batch. Every rejected record keeps its raw text and a reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.json as pj

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
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_TS_UNPARSEABLE = "unparseable ts: not RFC 3339 with a zone nor epoch milliseconds"


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
            if isinstance(value, int) and not _I64_MIN <= value <= _I64_MAX:
                return None, _TS_UNPARSEABLE
        elif key in kind.int_fields:
            if isinstance(value, bool) or not isinstance(value, int):
                return None, f"wrong type: {key} must be an integer, got {_tname(value)}"
            if not _I64_MIN <= value <= _I64_MAX:
                # orjson reads up to 2**64-1; a column of them is int64 (was: the whole batch failed)
                return None, f"invalid {key}: out of the 64-bit integer range"
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


class LazyPositions(Sequence[str]):
    """Where each record of a batch came from (file:line, topic/partition@offset), made only when read.

    `decode_records` reads only the rejected records' positions: formatting one per record would
    be a Python call per event.
    """

    def __init__(self, n: int, where: Callable[[int], str]) -> None:
        self._n, self._where = n, where

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._where(j) for j in range(self._n)[i]]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._where(i % self._n)


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
    records carry it in `source` so an operator can find them. Only rejected records' positions
    are read, so a lazy sequence is fine.
    """
    n = len(records)
    if positions is not None and len(positions) != n:
        raise ValueError(f"{len(positions)} positions for {n} records")
    parts: list[pl.DataFrame] = []
    slow: list[int] = []
    _decode_vectorised(records, kind, max_bytes, parts, slow)
    bad_i: list[int] = []
    bad_reason: list[str] = []
    if slow:
        slow.sort()
        rows: list[dict[str, Any]] = []
        for i in slow:
            row, reason = _decode_one(records[i], kind, max_bytes)
            if row is None:
                bad_i.append(i)
                bad_reason.append(reason or "invalid")
            else:
                row[_INDEX] = i
                rows.append(row)
        if rows:
            parts.append(pl.from_dicts(rows, schema=_decoded_schema(kind)))
    frame = pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=_decoded_schema(kind))
    if len(parts) > 1:
        frame = frame.sort(_INDEX)
    # a missing required field is a decoding reject, as `_decode_one` finds it (types are already
    # right: Arrow refused any other value), so the reason and its place in `rejected` stay the same
    missing: pl.Expr = pl.lit(None, dtype=pl.String)
    for req in reversed(kind.required):
        absent = pl.col(s.TS).is_null() & pl.col("_ts_ms").is_null() if req == s.TS else pl.col(req).is_null()
        missing = pl.when(absent).then(pl.lit(f"missing required field: {req}")).otherwise(missing)
    frame = frame.with_columns(missing.alias(REASON))
    unrequired = frame.filter(pl.col(REASON).is_not_null())
    if unrequired.height:
        bad_i.extend(unrequired.get_column(_INDEX).to_list())
        bad_reason.extend(unrequired.get_column(REASON).to_list())
        order = sorted(range(len(bad_i)), key=bad_i.__getitem__)
        bad_i, bad_reason = [bad_i[k] for k in order], [bad_reason[k] for k in order]
    checked = _with_reasons(frame.filter(pl.col(REASON).is_null()).drop(REASON), kind)
    failed = checked.filter(pl.col(REASON).is_not_null())
    bad_i.extend(failed.get_column(_INDEX).to_list())
    bad_reason.extend(failed.get_column(REASON).to_list())
    rejected = pl.DataFrame(
        {
            RAW: [_text(records[i]) for i in bad_i],
            REASON: bad_reason,
            SOURCE: [positions[i] for i in bad_i] if positions is not None else [source] * len(bad_i),
        },
        schema=REJECTED_SCHEMA,
    )
    accepted = checked.filter(pl.col(REASON).is_null()).select([pl.col(c).cast(dt) for c, dt in kind.schema.items()])
    return ValidatedBatch(accepted=accepted, rejected=rejected)


# --- the vectorised decoder ------------------------------------------------------------------
#
# A polled batch is joined into one NDJSON buffer and parsed by Arrow's JSON reader (C++, GIL
# released) with the contract's types as an explicit schema. Arrow is strict where the contract
# is: a value of the wrong JSON type, a duplicate key, a number that is not an int64, a bad escape
# or invalid UTF-8 fails the parse instead of being coerced. A failing buffer is split and parsed
# again in smaller chunks; a record that still fails goes through `_decode_one`, the per-record
# reference, so every reject keeps exactly its reason. Unknown fields are encoded by Polars
# (`struct.json_encode`, byte-identical to orjson for strings, integers and booleans) when the
# batch has one such field and every record has it with such a value; any other record with an
# unknown or null extra field takes `orjson` for its `extra`, as before.

_INDEX = "_i"
_CHUNKS = (1024, 32)
_OPEN, _CLOSE = ord("{"), ord("}")
_EXTRA_SIMPLE = (pa.string(), pa.large_string(), pa.int64(), pa.bool_())


def _decoded_schema(kind: RecordKind) -> dict[str, pl.DataType]:
    return {
        **{k: (pl.String() if k == s.TS else v) for k, v in kind.schema.items()},
        "_ts_ms": pl.Int64(),
        _INDEX: pl.Int64(),
    }


_ARROW_SCHEMAS: dict[tuple[str, bool], pa.Schema] = {}


def _arrow_schema(kind: RecordKind, epoch_ts: bool) -> pa.Schema:
    """The kind's contract fields as Arrow types (`ts` as string, or as int64 for epoch ms)."""
    cached = _ARROW_SCHEMAS.get((kind.name, epoch_ts))
    if cached is not None:
        return cached
    fields = []
    for k in kind.schema:
        if k == s.EXTRA:
            continue
        if k == s.TS:
            fields.append(pa.field(k, pa.int64() if epoch_ts else pa.string()))
        elif k in kind.int_fields:
            fields.append(pa.field(k, pa.int64()))
        else:
            fields.append(pa.field(k, pa.string()))
    schema = _ARROW_SCHEMAS[(kind.name, epoch_ts)] = pa.schema(fields)
    return schema


def _decode_vectorised(
    records: Sequence[bytes | str], kind: RecordKind, max_bytes: int, parts: list[pl.DataFrame], slow: list[int]
) -> None:
    """Decode what Arrow can into `parts` (frames with `_INDEX`); the indices of the rest go to `slow`."""
    n = len(records)
    if n == 0:
        return
    # Arrow sees only byte records of at most max_bytes (larger ones are rejected unparsed) that
    # start with `{` and end with `}`: no JSON value can then run from one record into the next
    # (`}` is never followed by `{` inside one), each record yields at least one row or an error,
    # and n rows from n records means one row per record, in order
    buf = b"\n".join(records) if all(type(r) is bytes for r in records) else None  # type: ignore[arg-type]
    if buf is not None:
        lens = np.fromiter(map(len, records), dtype=np.int64, count=n)
        ends = np.cumsum(lens + 1) - 1  # the separator after each record (one past the buffer's end)
        view = np.frombuffer(buf, dtype=np.uint8)
        fits = (
            bool((lens > 0).all())
            and int(lens.max()) <= max_bytes
            and bool((view[ends - lens] == _OPEN).all())
            and bool((view[ends - 1] == _CLOSE).all())
        )
    else:
        fits = False
    if fits:
        idx = list(range(n))
    else:
        idx = []
        for i, r in enumerate(records):
            if type(r) is bytes and len(r) <= max_bytes and r[:1] == b"{" and r[-1:] == b"}":
                idx.append(i)
            else:
                slow.append(i)
        buf = None
    _parse_chunk(records, idx, buf, kind, max_bytes, parts, slow, level=0)


def _parse_chunk(
    records: Sequence[bytes | str],
    idx: list[int],
    buf: bytes | None,
    kind: RecordKind,
    max_bytes: int,
    parts: list[pl.DataFrame],
    slow: list[int],
    level: int,
) -> None:
    if not idx:
        return
    if buf is None:
        buf = b"\n".join([records[i] for i in idx])  # type: ignore[misc]
    block = max(4 << 20, 2 * max_bytes + 2)
    for epoch_ts in (False, True) if _valid_utf8(buf) else ():
        try:
            table = pj.read_json(
                pa.py_buffer(buf),
                read_options=pj.ReadOptions(block_size=block),
                parse_options=pj.ParseOptions(
                    explicit_schema=_arrow_schema(kind, epoch_ts), unexpected_field_behavior="infer"
                ),
            )
        except (pa.ArrowException, ValueError):
            continue
        if table.num_rows == len(idx):
            _table_to_frame(table, records, idx, kind, epoch_ts, parts, slow)
            return
    if level >= len(_CHUNKS) or len(idx) == 1:
        slow.extend(idx)
        return
    size = _CHUNKS[level]
    for start in range(0, len(idx), size):
        _parse_chunk(records, idx[start : start + size], None, kind, max_bytes, parts, slow, level + 1)


def _valid_utf8(buf: bytes) -> bool:
    """Whether `buf` is valid UTF-8 (Arrow's JSON reader does not check, orjson refuses it)."""
    if buf.isascii():
        return True
    offsets = pa.array([0, len(buf)], pa.int64()).buffers()[1]
    text = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(buf)])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _table_to_frame(
    table: pa.Table,
    records: Sequence[bytes | str],
    idx: list[int],
    kind: RecordKind,
    epoch_ts: bool,
    parts: list[pl.DataFrame],
    slow: list[int],
) -> None:
    known = [k for k in kind.schema if k != s.EXTRA]
    unknown = [c for c in table.column_names if c not in kind.known]
    frame = pl.from_arrow(table.select(known), rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    if epoch_ts:
        frame = frame.with_columns(pl.col(s.TS).alias("_ts_ms"), pl.lit(None, dtype=pl.String).alias(s.TS))
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("_ts_ms"))
    frame = frame.with_columns(pl.Series(_INDEX, idx, dtype=pl.Int64))
    if not unknown:
        extra = pl.Series(s.EXTRA, [None] * len(idx), dtype=pl.String)
        parts.append(frame.with_columns(extra).select(list(_decoded_schema(kind))))
        return
    if len(unknown) == 1 and unknown[0] and table.schema.field(unknown[0]).type in _EXTRA_SIMPLE:
        # (only such columns are converted: Arrow can infer odd ones, e.g. list<null>, Polars refuses;
        # and only named ones: Polars renames a column "" to column_0)
        extras = pl.from_arrow(table.select(unknown), rechunk=False)
        assert isinstance(extras, pl.DataFrame)
        encoded = extras.select(
            pl.when(pl.col(unknown[0]).is_not_null()).then(pl.struct(unknown).struct.json_encode()).alias(s.EXTRA)
        ).to_series()
        redo = encoded.is_null().arg_true().to_list()
    else:
        encoded = pl.Series(s.EXTRA, [None] * len(idx), dtype=pl.String)
        redo = list(range(len(idx)))
    if redo:
        # absent or null, several, or not plainly typed: the per-record encoding decides
        known_names = kind.known
        values: list[str | None] = []
        keep: list[int] = []
        for j in redo:
            try:
                obj = orjson.loads(records[idx[j]])
            except orjson.JSONDecodeError:
                slow.append(idx[j])
                continue
            unknown_fields = {k: v for k, v in obj.items() if k not in known_names}
            values.append(orjson.dumps(unknown_fields).decode() if unknown_fields else None)
            keep.append(j)
        if len(keep) != len(redo):
            dropped = sorted(set(redo) - set(keep))
            mask = pl.Series([True] * len(idx)).scatter(dropped, False)
            frame, encoded = frame.filter(mask), encoded.filter(mask)
            gone = set(dropped)
            rank = {j: r for r, j in enumerate(j for j in range(len(idx)) if j not in gone)}
            keep = [rank[j] for j in keep]
        if keep:
            encoded = encoded.scatter(keep, pl.Series(values, dtype=pl.String))
    parts.append(frame.with_columns(encoded.alias(s.EXTRA)).select(list(_decoded_schema(kind))))


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
    frame = _with_reasons(frame, kind)
    where = pl.col(SOURCE) if SOURCE in frame.columns else pl.lit(source, dtype=pl.String)
    rejected = frame.filter(pl.col(REASON).is_not_null()).select(RAW, REASON, where.alias(SOURCE))
    accepted = frame.filter(pl.col(REASON).is_null()).select([pl.col(c).cast(dt) for c, dt in kind.schema.items()])
    return ValidatedBatch(accepted=accepted, rejected=rejected)


def _with_reasons(frame: pl.DataFrame, kind: RecordKind) -> pl.DataFrame:
    """`frame` with the kind's missing columns, `ts` parsed, and REASON (null when the row is valid)."""
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
            _TS_UNPARSEABLE,
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
    return frame.with_columns(reason.alias(REASON))


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
