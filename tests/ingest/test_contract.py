"""Contract parsing: good records, unknown fields kept, every kind of bad record rejected with a reason."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import polars as pl
import pytest

from core import schema as s
from ingest.contract import ACCOUNT_EVENTS, REASON, SOURCE, decode_records, validate_frame

GOOD = {
    "event_id": "evt-1",
    "ts": "2026-05-01T12:00:00.123Z",
    "account_id": "acct-1",
    "api_key_id": "k1",
    "org_id": "o1",
    "ip": "203.0.113.7",
    "user_agent": "python-requests/2.31",
    "model": "m-large",
    "endpoint": "/v1/messages",
    "prompt": "Explain photosynthesis.",
    "system_prompt_hash": "abc",
    "prompt_tokens": 5,
    "completion_tokens": 120,
    "status": 200,
    "latency_ms": 850,
}


def line(**changes: object) -> bytes:
    doc = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not _DROP})


_DROP = object()


def test_good_record_is_typed_per_contract() -> None:
    batch = decode_records([line()])
    assert batch.rejected.height == 0
    row = batch.accepted.row(0, named=True)
    assert row["ts"] == datetime(2026, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert row["prompt_tokens"] == 5 and row["status"] == 200
    assert batch.accepted.schema == pl.Schema(s.EVENT_SCHEMA)
    assert row["extra"] is None


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-05-01T12:00:00Z", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("2026-05-01T14:00:00+02:00", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("2026-05-01T12:00:00.5-01:00", datetime(2026, 5, 1, 13, 0, 0, 500000, tzinfo=UTC)),
        (1777636800000, datetime(2026, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(ts: object, expected: datetime) -> None:
    batch = decode_records([line(ts=ts)])
    assert batch.rejected.height == 0
    assert batch.accepted.get_column("ts").item() == expected


def test_unknown_fields_are_kept_as_extra() -> None:
    batch = decode_records([line(region="eu-west", trace={"id": 7, "tags": ["a"]})])
    assert batch.rejected.height == 0
    assert orjson.loads(batch.accepted.get_column("extra").item()) == {
        "region": "eu-west",
        "trace": {"id": 7, "tags": ["a"]},
    }


def test_an_unknown_field_with_an_empty_name_is_kept_not_a_crash() -> None:
    # Polars renames a column "" to column_0: the fast path for one unknown field used to crash
    batch = decode_records([line(**{"": 1}), line(region="eu")])
    assert batch.rejected.height == 0
    assert [orjson.loads(x) for x in batch.accepted.get_column("extra")] == [{"": 1}, {"region": "eu"}]


def test_optional_fields_may_be_absent_or_null() -> None:
    minimal = orjson.dumps({"event_id": "e", "ts": "2026-05-01T12:00:00Z", "account_id": "a", "ip": None})
    batch = decode_records([minimal])
    assert batch.rejected.height == 0
    assert batch.accepted.get_column("ip").item() is None


BAD = [
    (b"this is not json", "not JSON"),
    (b'{"event_id": "e", "ts": "2026-05-01T12:00:00Z", "account_id": "a"', "not JSON"),
    (b"[1, 2, 3]", "not a JSON object"),
    (b'"a string"', "not a JSON object"),
    (line(event_id=_DROP), "missing required field: event_id"),
    (line(account_id=_DROP), "missing required field: account_id"),
    (line(ts=_DROP), "missing required field: ts"),
    (line(account_id=None), "missing required field: account_id"),
    (line(event_id=42), "wrong type: event_id must be a string"),
    (line(prompt_tokens="12"), "wrong type: prompt_tokens must be an integer"),
    (line(prompt_tokens=1.5), "wrong type: prompt_tokens must be an integer"),
    (line(status=True), "wrong type: status must be an integer"),
    (line(ts=True), "wrong type: ts"),
    (line(ts=12.5), "wrong type: ts"),
    (line(ip=["1.2.3.4"]), "wrong type: ip must be a string"),
    (line(ts="2026-05-01T12:00:00"), "unparseable ts"),
    (line(ts="yesterday"), "unparseable ts"),
    (line(ts="2026-13-01T12:00:00Z"), "unparseable ts"),
    (line(ts=-5), "unparseable ts"),
    (line(account_id=""), "invalid account_id"),
    (line(event_id="x" * 129), "invalid event_id"),
    (line(prompt_tokens=-1), "invalid prompt_tokens: must be >= 0"),
    (line(latency_ms=-3), "invalid latency_ms"),
    (line(status=42), "invalid status"),
    (line(ip="999.1.1.1"), "invalid ip"),
    (line(ip="not-an-ip"), "invalid ip"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD, ids=[r for _, r in BAD])
def test_each_kind_of_bad_record_is_rejected_with_its_reason(raw: bytes, reason: str) -> None:
    batch = decode_records([line(), raw, line(event_id="evt-2")], positions=["f:1", "f:2", "f:3"])
    assert batch.accepted.height == 2, "good neighbours must survive a bad record"
    assert batch.rejected.height == 1
    got = batch.rejected.row(0, named=True)
    assert reason in got[REASON]
    assert got[SOURCE] == "f:2"
    assert got["raw"] == raw.decode()


def test_oversized_record_is_rejected() -> None:
    big = line(prompt="x" * 5000)
    batch = decode_records([big], max_bytes=1024)
    assert batch.rejected.height == 1
    assert batch.rejected.get_column(REASON).item().startswith("oversized record")


def test_ipv6_is_accepted() -> None:
    batch = decode_records([line(ip="2001:db8::1"), line(event_id="b", ip="::ffff:192.0.2.1")])
    assert batch.rejected.height == 0


def test_counts_add_up_on_a_mixed_batch() -> None:
    records = [line(event_id=f"e{i}") for i in range(50)] + [raw for raw, _ in BAD]
    batch = decode_records(records)
    assert batch.accepted.height == 50
    assert batch.rejected.height == len(BAD)
    assert batch.n_read == len(records)


def test_parquet_style_frame_is_validated_vectorised() -> None:
    frame = pl.DataFrame(
        {
            "event_id": ["a", "b", None],
            "ts": [datetime(2026, 5, 1, tzinfo=UTC)] * 3,
            "account_id": ["x", "y", "z"],
            "prompt_tokens": [1, -1, 2],
        }
    )
    batch = validate_frame(frame, source="f.parquet")
    assert batch.accepted.get_column("event_id").to_list() == ["a"]
    assert sorted(batch.rejected.get_column(REASON).to_list()) == [
        "invalid prompt_tokens: must be >= 0",
        "missing required field: event_id",
    ]


def test_account_events_enums_are_checked() -> None:
    good = orjson.dumps({"account_id": "a", "ts": "2026-05-01T00:00:00Z", "type": "signup", "kyc_status": "none"})
    bad_type = orjson.dumps({"account_id": "a", "ts": "2026-05-01T00:00:00Z", "type": "deleted"})
    bad_kyc = orjson.dumps(
        {"account_id": "a", "ts": "2026-05-01T00:00:00Z", "type": "kyc_update", "kyc_status": "maybe"}
    )
    batch = decode_records([good, bad_type, bad_kyc], kind=ACCOUNT_EVENTS)
    assert batch.accepted.height == 1
    reasons = batch.rejected.get_column(REASON).to_list()
    assert any(r.startswith("invalid type") for r in reasons)
    assert any(r.startswith("invalid kyc_status") for r in reasons)
