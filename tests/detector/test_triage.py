"""Triage in the detector layer: the transition table, suppressions against the pipeline's write path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.errors import BadRequest, Conflict, NotFound
from detector import repository, triage
from detector.decisions import DecisionPolicy
from detector.engine import Flag, Ring, TickOutcome
from detector.keys import Principal
from detector.service import record_outcomes

T0 = datetime(2026, 5, 1, 6, tzinfo=UTC)
ANA = Principal(1, "ana", "analyst")
POLICY = DecisionPolicy()


def _record(
    sessions: sessionmaker[Session], flags: list[Flag], rings: list[Ring] | None = None, now: datetime | None = None
) -> int:
    with transaction(sessions) as s:
        return record_outcomes([TickOutcome(T0, 1, flags, rings or [])], session=s, now=now)


def _status(sessions: sessionmaker[Session], account: str) -> list[str]:
    with sessions() as s:
        return [
            a.status for a in repository.list_alerts(repository.AlertFilter(account_id=account), session=s, limit=10)
        ]


def test_transition_table() -> None:
    assert triage.TRANSITIONS == {
        "open": ("acknowledged",),
        "acknowledged": ("resolved", "false_positive"),
        "resolved": (),
        "false_positive": (),
    }


def test_transitions_and_their_errors(sessions: sessionmaker[Session]) -> None:
    _record(sessions, [Flag("a", T0, 0.99, T0, action="block")])
    with sessions() as s:
        (alert,) = repository.list_alerts(repository.AlertFilter(), session=s, limit=1)
    for to, exc in (("resolved", Conflict), ("closed", BadRequest)):
        with pytest.raises(exc), transaction(sessions) as s:
            triage.transition_alert(alert.id, to, actor=ANA, comment="c", session=s, policy=POLICY)
    with pytest.raises(NotFound), transaction(sessions) as s:
        triage.transition_alert(10**6, "acknowledged", actor=ANA, comment="c", session=s, policy=POLICY)
    with transaction(sessions) as s:
        triage.transition_alert(alert.id, "acknowledged", actor=ANA, comment="mine", session=s, policy=POLICY)
        _, sup, outcome = triage.transition_alert(
            alert.id, "false_positive", actor=ANA, comment="a school", session=s, policy=POLICY, suppress_days=10
        )
    assert sup is not None and sup.label == "false_positive" and outcome.accounts == ["a"]
    with sessions() as s:
        history = repository.audit_of("alert", str(alert.id), session=s)
        assert [(h.actor, h.comment, h.detail["to"]) for h in history] == [
            ("ana", "mine", "acknowledged"),
            ("ana", "a school", "false_positive"),
        ]
        override = repository.get_override("a", session=s)
        assert override is not None and (override.action, override.source) == ("allow", "suppression")
        assert override.expires_at == sup.expires_at


def test_pipeline_neither_updates_nor_re_raises_a_suppressed_account(sessions: sessionmaker[Session]) -> None:
    _record(sessions, [Flag("a", T0, 0.95, T0, action="throttle", n_events=10), Flag("b", T0, 0.95, T0)])
    with sessions() as s:
        alert = repository.list_alerts(repository.AlertFilter(account_id="a"), session=s, limit=1)[0]
    with transaction(sessions) as s:
        triage.transition_alert(alert.id, "acknowledged", actor=ANA, comment="c", session=s, policy=POLICY)
        triage.transition_alert(
            alert.id, "false_positive", actor=ANA, comment="c", session=s, policy=POLICY, suppress_days=1
        )
    later = T0 + timedelta(hours=3)
    written = _record(
        sessions,
        [
            Flag("a", T0, 0.999, later, action="block", n_events=99),
            Flag("a", later, 0.999, later, action="block", n_events=99),
            Flag("b", T0, 0.99, later, n_events=5),
        ],
    )
    assert written == 1  # only b
    assert _status(sessions, "a") == ["false_positive"]
    with sessions() as s:
        a = repository.get_alert(alert.id, session=s)
        assert a is not None and (a.score, a.action, a.n_events) == (0.95, "throttle", 10)
        # the timeline still records what the detector saw
        assert [p.n_events for p in repository.account_activity("a", session=s)] == [10, 99]
    # after the suppression, the next flag re-opens the alert (and only then); the label remains
    _record(sessions, [Flag("a", T0, 0.999, later, action="block")], now=datetime.now(UTC) + timedelta(days=2))
    assert _status(sessions, "a") == ["open"]
    with sessions() as s:
        assert [x.label for x in repository.suppressions_of("a", session=s)] == ["false_positive"]
        assert repository.audit_of("alert", str(alert.id), session=s)[-1].action == "alert.reopen"


def test_ring_action_spares_suppressed_members(sessions: sessionmaker[Session]) -> None:
    members = ["m1", "m2", "m3"]
    _record(
        sessions,
        [Flag(m, T0, 0.97, T0, ring_id="r-1", action="require_kyc") for m in members],
        [Ring("r-1", members, 0.97, T0, ["shared IPs"])],
    )
    with transaction(sessions) as s:
        alert = repository.list_alerts(repository.AlertFilter(account_id="m2"), session=s, limit=1)[0]
        triage.transition_alert(alert.id, "acknowledged", actor=ANA, comment="c", session=s, policy=POLICY)
        triage.transition_alert(alert.id, "false_positive", actor=ANA, comment="c", session=s, policy=POLICY)
        outcome = triage.act_on_ring("r-1", "require_kyc", actor=ANA, comment="all of them", session=s, policy=POLICY)
    assert outcome.accounts == ["m1", "m3"] and [e.account_id for e in outcome.escalations] == ["m1", "m3"]
    for action, exc in (("allow", BadRequest),):
        with pytest.raises(exc), transaction(sessions) as s:
            triage.act_on_ring("r-1", action, actor=ANA, comment="c", session=s, policy=POLICY)
    with pytest.raises(NotFound), transaction(sessions) as s:
        triage.act_on_ring("r-nope", "block", actor=ANA, comment="c", session=s, policy=POLICY)


def test_activity_keeps_one_row_per_account_hour(sessions: sessionmaker[Session]) -> None:
    for minute, n in ((15, 5), (30, 9), (75, 20)):
        at = T0 + timedelta(minutes=minute)
        _record(sessions, [Flag("a", T0, 0.9 + minute / 1000, at, n_events=n)])
    with sessions() as s:
        rows = repository.account_activity("a", session=s)
    assert [(r.hour, r.n_events) for r in rows] == [(T0, 9), (T0 + timedelta(hours=1), 20)]
