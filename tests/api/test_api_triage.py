"""Triage over HTTP on SQLite and real PostgreSQL: transitions, suppressions, audit, rings, decisions, escalations."""
# ruff: noqa: F401, F811  (fixtures are imported by name and requested as parameters)

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_fixtures import BIG, BIG_RING, SMALL, SMALL_RING, SOLO, T0, Env, env, seed
from fastapi.testclient import TestClient

from core.db import transaction
from detector import repository
from detector.engine import Flag, TickOutcome
from detector.publisher import decision_message
from detector.service import record_outcomes


@pytest.fixture
def analyst(env: Env) -> Iterator[TestClient]:
    yield from env.client("analyst")


def _alert_of(c: TestClient, account_id: str) -> dict[str, Any]:
    items = c.get("/v1/alerts", params={"account_id": account_id}).json()["items"]
    assert len(items) == 1, items
    return items[0]


def _move(c: TestClient, alert_id: int, status: str, **extra: Any) -> Any:
    return c.post(f"/v1/alerts/{alert_id}/transitions", json={"status": status, "comment": f"to {status}", **extra})


# --- alerts ---


def test_list_filters_and_cursor(analyst: TestClient) -> None:
    body = analyst.get("/v1/alerts", params={"limit": 500}).json()
    assert body["total"] == len(BIG + SMALL + SOLO)
    ring = analyst.get("/v1/alerts", params={"ring_id": BIG_RING}).json()
    assert {a["account_id"] for a in ring["items"]} == set(BIG)
    crit = analyst.get("/v1/alerts", params={"severity": "critical", "limit": 500}).json()["items"]
    assert crit and all(a["severity"] == "critical" for a in crit)
    assert analyst.get("/v1/alerts", params={"since": (T0 + timedelta(minutes=1)).isoformat()}).json()["total"] == 0
    assert analyst.get("/v1/alerts", params={"until": (T0 + timedelta(minutes=1)).isoformat()}).json()["total"] == 12
    assert analyst.get("/v1/alerts", params={"status": "acknowledged"}).json()["total"] == 0
    seen, cursor = [], None
    while True:
        page = analyst.get("/v1/alerts", params={"limit": 5, **({"cursor": cursor} if cursor else {})}).json()
        seen += [a["id"] for a in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 12 and seen == sorted(seen, reverse=True)


def test_alert_detail_has_evidence_timeline_and_decision(analyst: TestClient) -> None:
    alert = _alert_of(analyst, BIG[1])
    detail = analyst.get(f"/v1/alerts/{alert['id']}").json()
    assert detail["ring_size"] == len(BIG)
    assert detail["ring_evidence"][0].startswith("shared IP addresses")
    assert detail["reasons"][0]["feature"] == "events_per_active_hour"
    # three hourly ticks: cumulative counts 101, 201, 301 -> 101 new events, then 100 per hour
    hours = [p["hour"] for p in detail["timeline"]]
    assert hours == sorted(hours) and len(hours) == 3
    assert [p["n_events"] for p in detail["timeline"]] == [101, 201, 301]
    assert [p["new_events"] for p in detail["timeline"]] == [101, 100, 100]
    assert detail["decision"] == {**detail["decision"], "action": "block", "rpm_limit": 0, "source": "detector"}
    assert detail["allowed_transitions"] == ["acknowledged"]
    assert detail["history"] == [] and detail["labels"] == []
    missing = analyst.get("/v1/alerts/2147483647")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


# --- transitions ---

VALID = [("open", "acknowledged"), ("acknowledged", "resolved"), ("acknowledged", "false_positive")]
INVALID = [
    ("open", "resolved"),
    ("open", "false_positive"),
    ("open", "open"),
    ("acknowledged", "acknowledged"),
    ("acknowledged", "open"),
    ("resolved", "acknowledged"),
    ("resolved", "false_positive"),
    ("resolved", "open"),
    ("resolved", "resolved"),
    ("false_positive", "acknowledged"),
    ("false_positive", "resolved"),
    ("false_positive", "open"),
    ("false_positive", "false_positive"),
]
PATH = {
    "open": [],
    "acknowledged": ["acknowledged"],
    "resolved": ["acknowledged", "resolved"],
    "false_positive": ["acknowledged", "false_positive"],
}


def _walk(c: TestClient, alert_id: int, to: str) -> None:
    for step in PATH[to]:
        assert _move(c, alert_id, step).status_code == 200


def test_every_valid_transition_is_recorded_with_actor_and_comment(analyst: TestClient) -> None:
    alert = _alert_of(analyst, SOLO[0])
    for start, to in VALID:
        if start == "acknowledged" and to == "false_positive":
            alert = _alert_of(analyst, SOLO[1])
            _walk(analyst, alert["id"], "acknowledged")
        r = _move(analyst, alert["id"], to)
        assert r.status_code == 200, r.text
        assert r.json()["alert"]["status"] == to
    history = analyst.get(f"/v1/alerts/{alert['id']}").json()["history"]
    assert [(h["detail"]["from"], h["detail"]["to"]) for h in history] == [
        ("open", "acknowledged"),
        ("acknowledged", "false_positive"),
    ]
    assert all(h["actor"] == "test-analyst" and h["comment"].startswith("to ") for h in history)


@pytest.mark.parametrize(("start", "to"), INVALID)
def test_every_invalid_transition_is_a_409(analyst: TestClient, start: str, to: str) -> None:
    alert = _alert_of(analyst, SOLO[2])
    _walk(analyst, alert["id"], start)
    r = _move(analyst, alert["id"], to)
    if to == "open":
        assert r.status_code == 422  # not a target anyone may ask for
    else:
        assert r.status_code == 409, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert start in r.json()["detail"] and to in r.json()["detail"]
    assert analyst.get(f"/v1/alerts/{alert['id']}").json()["status"] == start


def test_transition_needs_a_comment_and_suppress_days_only_for_false_positive(analyst: TestClient) -> None:
    alert = _alert_of(analyst, SOLO[3])
    r = analyst.post(f"/v1/alerts/{alert['id']}/transitions", json={"status": "acknowledged"})
    assert r.status_code == 422
    r = analyst.post(f"/v1/alerts/{alert['id']}/transitions", json={"status": "acknowledged", "comment": ""})
    assert r.status_code == 422
    assert _move(analyst, alert["id"], "acknowledged", suppress_days=3).status_code == 400
    assert _move(analyst, 2147483647, "acknowledged").status_code == 404


def test_false_positive_suppresses_labels_and_holds_against_the_detector(env: Env, analyst: TestClient) -> None:
    acct = SOLO[0]
    alert = _alert_of(analyst, acct)
    assert analyst.get(f"/v1/decisions/{acct}").json()["action"] == "throttle"
    _walk(analyst, alert["id"], "acknowledged")
    r = _move(analyst, alert["id"], "false_positive", suppress_days=2)
    assert r.status_code == 200
    sup = r.json()["suppression"]
    assert sup["label"] == "false_positive" and sup["active"]
    expires = datetime.fromisoformat(sup["expires_at"])
    assert timedelta(days=2) - timedelta(minutes=1) < expires - datetime.now(UTC) <= timedelta(days=2)
    # the decision is allow at once, until the suppression ends
    d = analyst.get(f"/v1/decisions/{acct}").json()
    assert d["action"] == "allow" and d["source"] == "suppression"
    assert datetime.fromisoformat(d["expires_at"]) == expires

    # the pipeline flags the account again (a later tick, and a brand-new first flag): nothing re-raised
    sessions = env.sessions()
    later = T0 + timedelta(hours=5)
    again = [
        Flag(acct, T0, 0.999, later, action="block", n_events=5000),
        Flag(acct, later, 0.999, later, action="block", n_events=5000),
    ]
    with transaction(sessions) as session:
        record_outcomes([TickOutcome(later, 10, again, [])], session=session)
    alerts = analyst.get("/v1/alerts", params={"account_id": acct}).json()
    assert alerts["total"] == 1 and alerts["items"][0]["status"] == "false_positive"
    assert alerts["items"][0]["score"] == alert["score"]  # not even re-scored

    # once the suppression has lapsed, the next flag re-opens it; the label stays on record
    now = datetime.now(UTC) + timedelta(days=3)
    with transaction(sessions) as session:
        record_outcomes([TickOutcome(later, 10, again[:1], [])], session=session, now=now)
    detail = analyst.get(f"/v1/alerts/{alert['id']}").json()
    assert detail["status"] == "open"
    assert detail["history"][-1]["action"] == "alert.reopen" and detail["history"][-1]["actor"] == "detector"
    assert [(lab["label"], lab["active"]) for lab in detail["labels"]] == [("false_positive", True)]
    sessions.kw["bind"].dispose()


def test_resolved_keeps_the_detector_decision(analyst: TestClient) -> None:
    alert = _alert_of(analyst, BIG[0])
    _walk(analyst, alert["id"], "resolved")
    d = analyst.get(f"/v1/decisions/{BIG[0]}").json()
    assert d["action"] == "block" and d["source"] == "detector"


# --- audit ---


def test_audit_log_lists_every_action_with_filters_and_cursor(env: Env, analyst: TestClient) -> None:
    alert = _alert_of(analyst, SOLO[1])
    _walk(analyst, alert["id"], "resolved")
    analyst.put(f"/v1/decisions/{SOLO[2]}", json={"action": "block", "comment": "abuse report"})
    analyst.delete(f"/v1/decisions/{SOLO[2]}", params={"comment": "appeal accepted"})
    analyst.post(f"/v1/rings/{SMALL_RING}/actions", json={"action": "throttle", "comment": "slow them"})
    items = analyst.get("/v1/audit", params={"limit": 500}).json()["items"]
    actions = [i["action"] for i in reversed(items)]
    assert actions == ["alert.transition", "alert.transition", "decision.override", "decision.clear", "ring.action"]
    assert {i["actor"] for i in items} == {"test-analyst"}
    assert {i["key_id"] for i in items} == {env.key_ids["analyst"]}
    only = analyst.get("/v1/audit", params={"target_type": "alert", "target_id": str(alert["id"])}).json()
    assert len(only["items"]) == 2
    first = analyst.get("/v1/audit", params={"limit": 2}).json()
    rest = analyst.get("/v1/audit", params={"limit": 500, "cursor": first["next_cursor"]}).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [i["id"] for i in items]
    assert analyst.get("/v1/audit", params={"cursor": "bm9wZQ"}).status_code == 400


# --- rings ---


def test_rings_list_and_detail(analyst: TestClient) -> None:
    rings = analyst.get("/v1/rings").json()
    assert [r["ring_id"] for r in rings] == [BIG_RING, SMALL_RING]
    detail = analyst.get(f"/v1/rings/{BIG_RING}").json()
    assert detail["members"] == sorted(BIG) and detail["size"] == 5
    assert detail["evidence"] == ["shared IP addresses: 3 value(s)", "shared user agents: 1"]
    assert {m["account_id"]: m["action"] for m in detail["member_alerts"]} == {a: "block" for a in BIG}
    assert all(m["alert_id"] and m["status"] == "open" for m in detail["member_alerts"])
    assert analyst.get("/v1/rings/r-nope").status_code == 404


@pytest.mark.parametrize("action", ["throttle", "require_kyc", "block"])
def test_one_action_on_a_whole_ring(env: Env, analyst: TestClient, action: str) -> None:
    # a member the analysts cleared is left alone
    cleared = _alert_of(analyst, SMALL[0])
    _walk(analyst, cleared["id"], "false_positive")
    env.publisher.messages.clear()
    r = analyst.post(f"/v1/rings/{SMALL_RING}/actions", json={"action": action, "comment": "coordinated harvest"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accounts"] == SMALL[1:] and body["skipped_suppressed"] == [SMALL[0]]
    for acct in SMALL[1:]:
        d = analyst.get(f"/v1/decisions/{acct}").json()
        assert d["action"] == action and d["source"] == "ring_action"
        assert d["rpm_limit"] == {"throttle": 60, "require_kyc": 0, "block": 0}[action]
    assert analyst.get(f"/v1/decisions/{SMALL[0]}").json()["action"] == "allow"
    # every change was produced (to Kafka when configured), in the publisher's accepted form
    assert [m["account_id"] for m in env.publisher.messages] == SMALL[1:]
    for m in env.publisher.messages:
        decision_message(m)
    escalations = analyst.get("/v1/escalations").json()["items"]
    if action == "require_kyc":
        assert sorted(e["account_id"] for e in escalations) == SMALL[1:]
        assert sorted(body["escalation_ids"]) == sorted(e["id"] for e in escalations)
        assert all(e["ring_id"] == SMALL_RING for e in escalations)
    else:
        assert escalations == [] and body["escalation_ids"] == []
    audit = analyst.get("/v1/audit", params={"target_type": "ring", "target_id": SMALL_RING}).json()["items"]
    assert audit[0]["detail"]["action"] == action and audit[0]["comment"] == "coordinated harvest"


def test_ring_action_bad_input(analyst: TestClient) -> None:
    assert analyst.post(f"/v1/rings/{BIG_RING}/actions", json={"action": "allow", "comment": "x"}).status_code == 422
    assert analyst.post(f"/v1/rings/{BIG_RING}/actions", json={"action": "block"}).status_code == 422
    assert analyst.post("/v1/rings/r-nope/actions", json={"action": "block", "comment": "x"}).status_code == 404
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = analyst.post(f"/v1/rings/{BIG_RING}/actions", json={"action": "block", "comment": "x", "expires_at": past})
    assert r.status_code == 400


# --- decisions ---


def test_decisions_layers_override_clear_and_expiry(env: Env, analyst: TestClient) -> None:
    d = analyst.get("/v1/decisions/nobody-at-all").json()
    assert d["action"] == "allow" and d["source"] == "default" and d["rpm_limit"] is None
    assert analyst.get(f"/v1/decisions/{SOLO[0]}").json()["rpm_limit"] == 60
    expires = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    r = analyst.put(
        f"/v1/decisions/{SOLO[0]}",
        json={"action": "throttle", "comment": "noisy", "rpm_limit": 5, "expires_at": expires.isoformat()},
    )
    assert r.status_code == 200, r.text
    assert r.json()["escalation_id"] is None
    d = analyst.get(f"/v1/decisions/{SOLO[0]}").json()
    assert (d["action"], d["rpm_limit"], d["source"]) == ("throttle", 5, "analyst")
    assert datetime.fromisoformat(d["expires_at"]) == expires and "noisy" in d["reason"]
    # the override expires by itself: the cache answers with the detector's decision afterwards
    cache = analyst.app.state.services.decisions  # type: ignore[attr-defined]
    assert cache.get(SOLO[0], expires + timedelta(seconds=1)).source == "detector"
    assert cache.get(SOLO[0], datetime.now(UTC) + timedelta(days=2)).source == "default"
    r = analyst.delete(f"/v1/decisions/{SOLO[0]}", params={"comment": "done"})
    assert r.status_code == 200 and r.json()["source"] == "detector"
    assert analyst.delete(f"/v1/decisions/{SOLO[0]}").status_code == 404
    r = analyst.put("/v1/decisions/new-acct", json={"action": "require_kyc", "comment": "chargeback"})
    assert r.json()["decision"]["action"] == "require_kyc" and r.json()["escalation_id"]
    again = analyst.put("/v1/decisions/new-acct", json={"action": "require_kyc", "comment": "again"})
    assert again.json()["escalation_id"] == r.json()["escalation_id"]  # one open escalation per account


@pytest.mark.parametrize(
    "body",
    [
        {"action": "nuke", "comment": "x"},
        {"action": "block"},
        {"action": "block", "comment": "x", "rpm_limit": 5},
        {"action": "throttle", "comment": "x", "rpm_limit": -1},
        {"action": "throttle", "comment": "x", "expires_at": "2020-01-01T00:00:00Z"},
        {"action": "throttle", "comment": "x", "expires_at": "2999-01-01T00:00:00"},
        {"action": "throttle", "comment": "x", "extra": 1},
        {"action": "throttle", "comment": "nul\u0000byte"},
    ],
)
def test_override_bad_input_is_4xx(analyst: TestClient, body: dict[str, Any]) -> None:
    r = analyst.put(f"/v1/decisions/{SOLO[0]}", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_changes_by_another_process_reach_the_cache_by_refresh(env: Env) -> None:
    for c in env.client("platform", decisions_refresh_seconds=0.1):
        assert c.get(f"/v1/decisions/{SOLO[3]}").json()["action"] == "throttle"
        for other in env.client("analyst"):  # a second API process
            other.put(f"/v1/decisions/{SOLO[3]}", json={"action": "block", "comment": "elsewhere"})
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while c.get(f"/v1/decisions/{SOLO[3]}").json()["action"] != "block":
            assert datetime.now(UTC) < deadline, "the background refresh never saw the change"


# --- escalations ---


@pytest.mark.parametrize(("outcome", "action"), [("verified", "allow"), ("failed", "block")])
def test_escalation_outcome_updates_the_decision(env: Env, outcome: str, action: str) -> None:
    for analyst in env.client("analyst"):
        esc_id = analyst.put(f"/v1/decisions/{SOLO[1]}", json={"action": "require_kyc", "comment": "prove it"}).json()[
            "escalation_id"
        ]
    for platform in env.client("platform"):
        r = platform.post(f"/v1/escalations/{esc_id}/outcome", json={"outcome": outcome, "comment": "provider ref 42"})
        assert r.status_code == 200, r.text
        assert r.json()["escalation"]["status"] == outcome
        d = platform.get(f"/v1/decisions/{SOLO[1]}").json()
        assert (d["action"], d["source"]) == (action, "kyc")
        again = platform.post(f"/v1/escalations/{esc_id}/outcome", json={"outcome": "verified"})
        assert again.status_code == 409
        assert platform.post("/v1/escalations/2147483647/outcome", json={"outcome": "verified"}).status_code == 404
        assert platform.post(f"/v1/escalations/{esc_id}/outcome", json={"outcome": "maybe"}).status_code == 422
        detail = platform.get(f"/v1/escalations/{esc_id}").json()
        assert detail["status"] == outcome and detail["outcome_comment"] == "provider ref 42"
        listed = platform.get("/v1/escalations", params={"status": outcome}).json()["items"]
        assert [e["id"] for e in listed] == [esc_id]
        assert platform.get("/v1/escalations", params={"account_id": "nobody"}).json()["items"] == []


def test_escalation_is_written_with_its_outbox_in_the_decision_transaction(env: Env) -> None:
    for admin in env.client("admin"):
        created = admin.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/kyc"}).json()
        assert len(created["secret"]) >= 32
        esc_id = admin.put("/v1/decisions/acct-x", json={"action": "require_kyc", "comment": "x"}).json()[
            "escalation_id"
        ]
        detail = admin.get(f"/v1/escalations/{esc_id}").json()
        assert [m["endpoint_id"] for m in detail["messages"]] == [created["id"]]
        assert detail["messages"][0]["status"] == "pending"
        assert detail["messages"][0]["idempotency_key"] == detail["idempotency_key"]
        # a failing decision write leaves neither escalation nor outbox behind
        with pytest.raises(RuntimeError), transaction(env.sessions()) as session:
            from detector.escalations import escalate
            from detector.keys import Principal

            escalate("acct-y", actor=Principal(1, "t", "analyst"), reason="x", session=session)
            raise RuntimeError("the decision failed")
        with env.sessions()() as session:
            assert repository.open_escalation_of("acct-y", session=session) is None
            assert repository.outbox_counts(session=session) == {"pending": 1}


# --- keys, webhooks (admin) ---


def test_admin_manages_keys_and_webhooks(env: Env) -> None:
    for admin in env.client("admin"):
        created = admin.post("/v1/keys", json={"name": "gateway-eu", "scope": "platform"})
        assert created.status_code == 201
        key = created.json()
        assert key["key"].startswith("dg_") and key["prefix"] == key["key"][:10]
        listed = admin.get("/v1/keys").json()
        assert "key" not in listed[-1] and listed[-1]["name"] == "gateway-eu"
        with env.sessions()() as session:  # only the hash is stored
            stored = repository.get_api_key(key["id"], session=session)
            assert stored is not None and key["key"] not in stored.key_hash and len(stored.key_hash) == 64
        new = {"Authorization": f"Bearer {key['key']}"}
        assert admin.get("/v1/decisions/a", headers=new).status_code == 200
        assert admin.delete(f"/v1/keys/{key['id']}").json()["revoked_at"]
        assert admin.get("/v1/decisions/a", headers=new).status_code == 401
        assert admin.delete(f"/v1/keys/{env.key_ids['admin']}").status_code == 409  # not yourself
        assert admin.delete("/v1/keys/2147483647").status_code == 404
        assert admin.post("/v1/keys", json={"name": " ", "scope": "platform"}).status_code == 422
        assert admin.post("/v1/keys", json={"name": "x", "scope": "root"}).status_code == 422
        hook = admin.post("/v1/webhooks", json={"url": "https://kyc.example/hook", "secret": "s" * 20}).json()
        assert hook["secret"] == "s" * 20
        assert admin.get("/v1/webhooks").json()[0] == {k: v for k, v in hook.items() if k != "secret"}
        assert admin.delete(f"/v1/webhooks/{hook['id']}").json()["active"] is False
        assert admin.delete("/v1/webhooks/2147483647").status_code == 404
        assert admin.post("/v1/webhooks", json={"url": "ftp://x/y"}).status_code == 422
        assert admin.post("/v1/webhooks", json={"url": "https://x/y", "secret": "short"}).status_code == 422
        actions = [i["action"] for i in admin.get("/v1/audit").json()["items"]]
        assert {"api_key.create", "api_key.revoke", "webhook.add", "webhook.deactivate"} <= set(actions)


def test_webhook_endpoints_come_from_settings(env: Env) -> None:
    urls = ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"]
    for admin in env.client("admin", kyc_webhook_urls=urls, kyc_webhook_secret="x" * 32):
        hooks = admin.get("/v1/webhooks").json()
        assert [(h["url"], h["source"], h["active"]) for h in hooks] == [(u, "settings", True) for u in urls]


def test_cached_keys_survive_with_no_database_round_trip(env: Env) -> None:
    for c in env.client("platform"):
        keys = c.app.state.services.keys  # type: ignore[attr-defined]
        assert keys.cached(env.tokens["platform"]).scope == "platform"
        assert keys.cached("dg_not-a-key") is None
        assert c.get("/v1/decisions/a", headers={"Authorization": "Bearer dg_not-a-key"}).status_code == 401
        assert keys.cached("dg_not-a-key") is False  # remembered: no second database lookup
