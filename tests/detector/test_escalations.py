"""KYC escalations: signatures, the outbox written with the decision, outcomes, leases, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.errors import BadRequest, Conflict, NotFound
from core.settings import Settings
from detector import escalations, repository
from detector.decisions import DecisionPolicy
from detector.escalations import DeliveryConfig, escalate, record_outcome, sign, verify_signature
from detector.keys import Principal

ANALYST = Principal(1, "ana", "analyst")
PROVIDER = Principal(2, "kyc-co", "platform")


def test_signature_round_trip_and_replay_window() -> None:
    body = b'{"a":1}'
    sig = sign("s" * 20, 1_700_000_000, body)
    assert sig.startswith("v1=") and len(sig) == 3 + 64
    ok = {"timestamp": "1700000000", "signature": sig, "body": body}
    assert verify_signature("s" * 20, **ok, now=1_700_000_100)
    assert not verify_signature("s" * 20, **ok, now=1_700_000_301)  # stale: a replay
    assert not verify_signature("s" * 20, **ok, now=1_699_999_000)  # from the future
    assert not verify_signature("t" * 20, **ok, now=1_700_000_000)
    assert not verify_signature("s" * 20, timestamp="1700000000", signature=sig, body=b'{"a":2}', now=1_700_000_000)


def test_escalation_fans_out_to_active_endpoints_once_per_account(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        a, _ = escalations.add_endpoint("http://127.0.0.1:9/a", session=s)
        b, secret = escalations.add_endpoint("https://kyc.example/b", session=s, secret="x" * 16)
        off, _ = escalations.add_endpoint("http://127.0.0.1:9/off", session=s)
        escalations.deactivate_endpoint(off.id, session=s)
        esc, created = escalate("acct", actor=ANALYST, reason="chargebacks", session=s)
        again, created_again = escalate("acct", actor=ANALYST, reason="again", session=s)
    assert secret == "x" * 16 and created and not created_again and again.id == esc.id
    with sessions() as s:
        messages = repository.outbox_of(esc.id, session=s)
        assert sorted(m.endpoint_id for m in messages) == sorted([a.id, b.id])
        assert {m.idempotency_key for m in messages} == {esc.idempotency_key}
        assert all(m.status == "pending" and m.attempts == 0 for m in messages)
        assert messages[0].payload["account_id"] == "acct" and messages[0].payload["escalation_id"] == esc.id
        audit = repository.audit_of("escalation", str(esc.id), session=s)
        assert [e.action for e in audit] == ["escalation.create"]


def test_outcomes_set_the_decision_and_happen_once(sessions: sessionmaker[Session]) -> None:
    policy = DecisionPolicy(kyc_verified_ttl=timedelta(days=1), kyc_failed_ttl=timedelta(days=2))
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        ok, _ = escalate("good", actor=ANALYST, reason="r", session=s)
        bad, _ = escalate("bad", actor=ANALYST, reason="r", session=s)
    with transaction(sessions) as s:
        record_outcome(ok.id, "verified", actor=PROVIDER, session=s, policy=policy, now=now)
        record_outcome(bad.id, "failed", actor=PROVIDER, session=s, policy=policy, comment="forged id", now=now)
    with sessions() as s:
        good, worse = repository.get_override("good", session=s), repository.get_override("bad", session=s)
        assert good is not None and (good.action, good.source, good.expires_at) == ("allow", "kyc", now + timedelta(1))
        assert worse is not None and (worse.action, worse.rpm_limit) == ("block", 0) and "forged id" in worse.reason
    for outcome, exc in (("verified", Conflict), ("maybe", BadRequest)):
        with pytest.raises(exc), transaction(sessions) as s:
            record_outcome(ok.id, outcome, actor=PROVIDER, session=s, policy=policy)
    with pytest.raises(NotFound), transaction(sessions) as s:
        record_outcome(10**6, "verified", actor=PROVIDER, session=s, policy=policy)
    with transaction(sessions) as s:  # the account may be escalated again after an outcome
        _, created = escalate("good", actor=ANALYST, reason="new evidence", session=s)
    assert created


def test_a_leased_message_is_claimed_by_one_worker_only(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        escalations.add_endpoint("http://127.0.0.1:9/a", session=s)
        escalate("acct", actor=ANALYST, reason="r", session=s)
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        (message_id,) = repository.due_outbox_ids(session=s, now=now, limit=10)
        assert repository.claim_outbox(message_id, session=s, now=now, until=now + timedelta(seconds=60))
    with transaction(sessions) as s:
        assert not repository.claim_outbox(message_id, session=s, now=now, until=now + timedelta(seconds=60))
        assert repository.due_outbox_ids(session=s, now=now, limit=10) == []
    later = now + timedelta(seconds=61)  # the first worker died: its lease lapses, the message is due again
    with transaction(sessions) as s:
        assert repository.due_outbox_ids(session=s, now=later, limit=10) == [message_id]
        assert repository.claim_outbox(message_id, session=s, now=later, until=later + timedelta(seconds=60))


def test_settings_endpoints_need_a_secret_and_valid_urls(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(BadRequest), transaction(sessions) as s:
        escalations.sync_settings_endpoints(Settings(kyc_webhook_urls=["http://127.0.0.1:9/a"]), session=s)
    with pytest.raises(BadRequest), transaction(sessions) as s:
        escalations.sync_settings_endpoints(
            Settings(kyc_webhook_urls=["ftp://x/"], kyc_webhook_secret="y" * 20), session=s
        )
    for url in ("http://\x80/", "http://host:99999/", "not a url"):
        with pytest.raises(BadRequest), transaction(sessions) as s:
            escalations.add_endpoint(url, session=s)
    with pytest.raises(BadRequest), transaction(sessions) as s:
        escalations.add_endpoint("http://127.0.0.1:9/a", session=s, secret="short")
    with transaction(sessions) as s:
        rows = escalations.sync_settings_endpoints(
            Settings(kyc_webhook_urls=["http://127.0.0.1:9/a"], kyc_webhook_secret="y" * 20), session=s
        )
    assert [(r.url, r.source, r.secret) for r in rows] == [("http://127.0.0.1:9/a", "settings", "y" * 20)]


def test_delivery_config_keeps_the_lease_longer_than_an_attempt() -> None:
    config = DeliveryConfig.from_settings(Settings(webhook_timeout_seconds=50, webhook_lease_seconds=10))
    assert config.lease >= 2 * config.timeout
    assert DeliveryConfig(backoff_base=1, backoff_max=8).backoff(10) == 8
