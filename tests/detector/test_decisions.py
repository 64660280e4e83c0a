"""The decision cache: layers (override > detector > allow), expiry, incremental refresh, publishing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.errors import BadRequest
from core.settings import Settings
from detector import decisions, repository
from detector.decisions import DecisionCache, DecisionPolicy, NoopPublisher, clear_override, set_override
from detector.keys import Principal

T0 = datetime(2026, 5, 1, tzinfo=UTC)
ANALYST = Principal(1, "ana", "analyst")
POLICY = DecisionPolicy(throttle_rpm=30, kyc_rpm=2, detector_ttl=timedelta(hours=1))


def _alert(
    session: Session,
    account: str,
    *,
    action: str,
    status: str = "open",
    updated: datetime,
    key: str | None = None,
    score: float = 0.97,
) -> None:
    repository.upsert_alerts(
        [
            {
                "alert_key": key or f"{account}@{T0.isoformat()}",
                "account_id": account,
                "ring_id": None,
                "score": score,
                "severity": "high",
                "status": status,
                "action": action,
                "first_flagged_ts": T0,
                "last_scored_ts": T0,
                "n_events": 10,
                "reasons": [],
                "created_at": updated,
                "updated_at": updated,
            }
        ],
        session=session,
    )


class Recorder(NoopPublisher):
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, decisions: Any) -> None:
        self.sent.extend(decisions)


def test_layers_and_expiry(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        _alert(s, "det", action="require_kyc", updated=now)
        _alert(s, "fp", action="block", status="false_positive", updated=now)
        _alert(s, "over", action="block", updated=now)
        set_override(
            "over",
            "throttle",
            actor=ANALYST,
            reason="r",
            source="analyst",
            expires_at=now + timedelta(minutes=10),
            rpm_limit=7,
            session=s,
            policy=POLICY,
            now=now,
        )
    cache = DecisionCache(sessions, POLICY)
    cache.refresh()
    d = cache.get("det", now)
    assert (d.action, d.rpm_limit, d.source) == ("require_kyc", 2, "detector")
    assert d.expires_at == now + POLICY.detector_ttl
    assert cache.get("fp", now).source == "default"  # a false positive gives no detector decision
    assert (cache.get("over", now).action, cache.get("over", now).rpm_limit) == ("throttle", 7)
    later = now + timedelta(minutes=11)
    assert cache.get("over", later).source == "detector"  # the override lapsed
    assert cache.get("det", now + timedelta(hours=2)).source == "default"  # so did the detector's
    unknown = cache.get("nobody", now)
    assert (unknown.action, unknown.rpm_limit, unknown.expires_at) == ("allow", None, now + POLICY.default_ttl)
    assert len(cache) == 3


def test_newest_alert_of_an_account_speaks(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        _alert(s, "a", action="block", updated=now, key="a@1")
        _alert(s, "a", action="throttle", updated=now - timedelta(minutes=5), key="a@2")
    cache = DecisionCache(sessions, POLICY)
    cache.refresh()
    assert cache.get("a", now).action == "throttle"  # higher id, although older updated_at


def test_incremental_refresh_sees_other_writers_and_reload_publishes(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        _alert(s, "x", action="throttle", updated=now)
    recorder = Recorder()
    cache = DecisionCache(sessions, POLICY, publisher=recorder)
    cache.refresh()
    with transaction(sessions) as s:  # another process writes
        _alert(s, "x", action="block", updated=now + timedelta(seconds=1))
        set_override(
            "y",
            "block",
            actor=ANALYST,
            reason="r",
            source="analyst",
            expires_at=now + timedelta(hours=1),
            session=s,
            policy=POLICY,
            now=now + timedelta(seconds=1),
        )
    assert cache.get("x").action == "throttle" and cache.get("y").action == "allow"
    cache.refresh()
    assert cache.get("x").action == "block" and cache.get("y").action == "block"
    assert recorder.sent == []  # the background refresh does not publish: the writer did
    with transaction(sessions) as s:
        assert clear_override("y", actor=ANALYST, session=s)
        assert not clear_override("y", actor=ANALYST, session=s)  # nothing left in force
    published = cache.reload(["y"])
    assert published[0].action == "allow" and recorder.sent[0]["account_id"] == "y"
    assert recorder.sent[0]["action"] == "allow"


def test_started_cache_refreshes_in_the_background(sessions: sessionmaker[Session]) -> None:
    cache = DecisionCache(sessions, POLICY, refresh_seconds=0.05)
    cache.start()
    try:
        with transaction(sessions) as s:
            _alert(s, "bg", action="block", updated=datetime.now(UTC))
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while cache.get("bg").action != "block":
            assert datetime.now(UTC) < deadline
    finally:
        cache.stop()


def test_override_validation(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        with pytest.raises(BadRequest):
            set_override(
                "a",
                "nuke",
                actor=ANALYST,
                reason="r",
                source="analyst",
                expires_at=now + timedelta(1),
                session=s,
                policy=POLICY,
                now=now,
            )
        with pytest.raises(BadRequest):
            set_override(
                "a",
                "block",
                actor=ANALYST,
                reason="r",
                source="analyst",
                expires_at=now,
                session=s,
                policy=POLICY,
                now=now,
            )
        with pytest.raises(BadRequest):
            set_override(
                "a",
                "block",
                actor=ANALYST,
                reason="r",
                source="analyst",
                expires_at=now + timedelta(1),
                rpm_limit=5,
                session=s,
                policy=POLICY,
                now=now,
            )


def test_policy_from_settings_and_publisher_choice() -> None:
    policy = DecisionPolicy.from_settings(Settings(decisions_throttle_rpm=12, decisions_kyc_rpm=1))
    assert [policy.rpm_for(a) for a in decisions.ACTIONS] == [None, 12, 1, 0]
    assert isinstance(decisions.make_publisher(Settings()), NoopPublisher)  # Kafka off unless configured
