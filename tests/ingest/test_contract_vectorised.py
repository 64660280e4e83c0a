"""The vectorised decoder gives exactly what the per-record reference gives, on any mix of records."""

from __future__ import annotations

import os
from typing import Any

import orjson
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import schema as s
from ingest.contract import (
    ACCOUNT_EVENTS,
    EVENTS,
    RAW,
    REASON,
    REJECTED_SCHEMA,
    SOURCE,
    RecordKind,
    ValidatedBatch,
    _decode_one,
    _text,
    decode_records,
    validate_frame,
)


def reference_decode(records: list[bytes], kind: RecordKind, positions: list[str], max_bytes: int) -> ValidatedBatch:
    """The decoder as it was before vectorising: one `_decode_one` per record, then validate_frame."""
    rows: list[dict[str, Any]] = []
    bad_raw, bad_reason, bad_pos, good_raw, good_pos = [], [], [], [], []
    for raw, where in zip(records, positions, strict=True):
        row, reason = _decode_one(raw, kind, max_bytes)
        if row is None:
            bad_raw.append(_text(raw))
            bad_reason.append(reason or "invalid")
            bad_pos.append(where)
        else:
            rows.append(row)
            good_raw.append(raw)
            good_pos.append(where)
    schema = {**{k: (pl.String() if k == s.TS else v) for k, v in kind.schema.items()}, "_ts_ms": pl.Int64()}
    frame = pl.from_dicts(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
    frame = frame.with_columns(
        pl.Series(RAW, [_text(r) for r in good_raw], dtype=pl.String),
        pl.Series(SOURCE, good_pos, dtype=pl.String),
    )
    checked = validate_frame(frame, kind=kind)
    rejected = pl.concat(
        [pl.DataFrame({RAW: bad_raw, REASON: bad_reason, SOURCE: bad_pos}, schema=REJECTED_SCHEMA), checked.rejected]
    )
    return ValidatedBatch(accepted=checked.accepted, rejected=rejected)


def assert_same(records: list[bytes], kind: RecordKind = EVENTS, max_bytes: int = 256 * 1024) -> ValidatedBatch:
    positions = [f"t/0@{i}" for i in range(len(records))]
    got = decode_records(records, kind=kind, positions=positions, max_bytes=max_bytes)
    want = reference_decode(records, kind, positions, max_bytes)
    assert got.accepted.schema == want.accepted.schema
    assert got.accepted.to_dicts() == want.accepted.to_dicts()
    assert got.rejected.to_dicts() == want.rejected.to_dicts()
    return got


GOOD = {
    "event_id": "evt-1",
    "ts": "2026-05-01T12:00:00.123Z",
    "account_id": "acct-1",
    "ip": "203.0.113.7",
    "prompt": "Explain photosynthesis, step by step.",
    "prompt_tokens": 5,
    "status": 200,
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["2026-05-01T12:00:00Z", "2026-05-01T12:00:00", "10.0.0.1", "::1", "", "x" * 130]),
    st.sampled_from([1777636800000, -5, 0, 2**63 - 1, 2**63]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
known_keys = sorted(EVENTS.known | ACCOUNT_EVENTS.known)
keys = st.one_of(
    st.sampled_from(known_keys), st.sampled_from(["gateway_trace", "region", "trace"]), st.text(max_size=6)
)


@st.composite
def a_record(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(
            st.sampled_from(
                [
                    b"",
                    b"   ",
                    b"not json",
                    b"[1, 2]",
                    b"null",
                    b'"s"',
                    b"{",
                    b"}",
                    b"{}",
                    b'{"a":1} {"b":2}',
                    b'\xef\xbb\xbf{"event_id":"e"}',
                    b'{"event_id":"\xff"}',
                    b'{"event_id":"\\ud800"}',
                    b'{"a":1,\n"b":2}',
                    b' {"event_id":"e","ts":"2026-05-01T12:00:00Z","account_id":"a"} ',
                    b'{"event_id":"e","ts":"2026-05-01T12:00:00Z","account_id":"a","event_id":"f"}',
                    b'{"event_id":"e","ts":"2026-05-01T12:00:00Z","account_id":"a","x":1,"x":null}',
                    b'{"event\\u005fid":"e","ts":"2026-05-01T12:00:00Z","account_id":"a"}',
                    b'{"event_id":"e","ts":"2026-05-01T12:00:00Z","account_id":"a","n":1e2,"prompt_tokens":1e2}',
                    b'{"event_id":"e","ts":"2026-05-01T12:00:00Z","account_id":"a","deep":'
                    + b"[" * 1100
                    + b"]" * 1100
                    + b"}",
                ]
            )
        )
    doc: dict[str, Any] = dict(GOOD) if kind < 7 else {}
    for _ in range(draw(st.integers(0, 4))):
        doc[draw(keys)] = draw(values)
    if draw(st.booleans()):
        doc["gateway_trace"] = draw(st.text(max_size=20))
    items = list(doc.items())
    if draw(st.booleans()):
        items = draw(st.permutations(items))
    return orjson.dumps(dict(items), option=orjson.OPT_NON_STR_KEYS)


@settings(
    max_examples=int(os.environ.get("DISTILLGUARD_HYPOTHESIS_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(st.lists(a_record(), max_size=25), st.sampled_from([EVENTS, ACCOUNT_EVENTS]))
def test_vectorised_decoder_matches_the_per_record_reference(records: list[bytes], kind: RecordKind) -> None:
    assert_same(records, kind)


def test_a_large_clean_batch_with_an_unknown_field_matches() -> None:
    records = [orjson.dumps({**GOOD, "event_id": f"e{i}", "gateway_trace": "t" * (i % 7)}) for i in range(3000)]
    records[1234] = b"not json"
    records[2000] = orjson.dumps({**GOOD, "ts": 1777636800000})
    records[2500] = orjson.dumps({**GOOD, "prompt_tokens": "12"})
    batch = assert_same(records)
    assert batch.accepted.height == 2998


def test_epoch_ms_timestamps_and_mixed_forms_match() -> None:
    records = [orjson.dumps({**GOOD, "event_id": f"e{i}", "ts": 1777636800000 + i}) for i in range(100)]
    assert_same(records)
    records[50] = orjson.dumps({**GOOD, "event_id": "s"})
    assert_same(records)


def test_oversized_and_text_records_match() -> None:
    records: list[Any] = [orjson.dumps({**GOOD, "prompt": "x" * 3000}), orjson.dumps(GOOD), orjson.dumps(GOOD).decode()]
    assert_same(records, max_bytes=1024)


def test_integers_beyond_64_bits_are_rejected_not_fatal() -> None:
    big = orjson.dumps({**GOOD, "prompt_tokens": 2**63})
    huge_ts = orjson.dumps({**GOOD, "ts": 2**64 - 1})
    batch = assert_same([orjson.dumps(GOOD), big, huge_ts])
    assert batch.accepted.height == 1
    assert batch.rejected.get_column(REASON).to_list() == [
        "invalid prompt_tokens: out of the 64-bit integer range",
        "unparseable ts: not RFC 3339 with a zone nor epoch milliseconds",
    ]
