"""KYC webhooks end to end: a real HTTP receiver on 127.0.0.1 sees signed deliveries, retried after
500s and timeouts, none lost and none processed twice under one idempotency key."""
# ruff: noqa: F401, F811  (fixtures are imported by name and requested as parameters)

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from api_fixtures import BIG, BIG_RING, SMALL, SMALL_RING, Env, env
from typer.testing import CliRunner

from core.db import make_engine, make_sessionmaker
from detector import repository
from detector.escalations import (
    ATTEMPT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryConfig,
    DeliveryWorker,
    sign,
    verify_signature,
)
from detector.models import WebhookDelivery

SECRET = "receiver-secret-0123456789abcdef"
TIMEOUT = 0.5


@dataclass
class Receiver:
    """A KYC provider's endpoint: verifies signatures, rejects replays, processes each key once."""

    plan: dict[str, list[str]] = field(default_factory=dict)  # account -> behaviour per attempt
    posts: list[dict[str, Any]] = field(default_factory=list)
    processed: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen_by_account: Counter[str] = field(default_factory=Counter)

    def handle(self, headers: Any, body: bytes) -> tuple[int, float]:
        """(status, delay before answering) for one POST."""
        ok = verify_signature(
            SECRET,
            timestamp=headers.get(TIMESTAMP_HEADER, ""),
            signature=headers.get(SIGNATURE_HEADER, ""),
            body=body,
            tolerance_seconds=300,
        )
        doc = orjson.loads(body)
        key = headers.get(IDEMPOTENCY_HEADER)
        with self.lock:
            self.posts.append(
                {
                    "key": key,
                    "account": doc["account_id"],
                    "attempt": headers.get(ATTEMPT_HEADER),
                    "signed": ok,
                    "body": body,
                    "headers": dict(headers),
                }
            )
            if not ok:
                self.rejected += 1
                return 401, 0.0
            n = self.seen_by_account[doc["account_id"]]
            self.seen_by_account[doc["account_id"]] += 1
            steps = self.plan.get(doc["account_id"], [])
            behaviour = steps[n] if n < len(steps) else "ok"
            if behaviour == "500":
                return 500, 0.0
            if key in self.processed:
                return 200, 0.0  # a retry of something already done: acknowledge, do nothing
            self.processed[key] += 1
            # "timeout": done on our side, but the answer comes after the sender gave up
            return 200, (TIMEOUT + 0.4 if behaviour == "timeout" else 0.0)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, delay = state.handle(self.headers, body)
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the sender hung up (timeout)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/kyc/hook"
    finally:
        server.shutdown()
        server.server_close()


CONFIG = DeliveryConfig(timeout=TIMEOUT, backoff_base=0.05, backoff_max=1.0, max_attempts=6, lease=2.0, poll=0.05)


def _escalate_rings(env: Env, url: str) -> dict[str, int]:
    """Register the receiver and escalate both rings; returns account -> escalation id."""
    out = {}
    for admin in env.client("admin"):
        assert admin.post("/v1/webhooks", json={"url": url, "secret": SECRET}).status_code == 201
        for ring in (BIG_RING, SMALL_RING):
            body = admin.post(f"/v1/rings/{ring}/actions", json={"action": "require_kyc", "comment": "prove it"}).json()
            for acct, esc in zip(body["accounts"], body["escalation_ids"], strict=True):
                out[acct] = esc
    return out


def test_signed_deliveries_retried_after_500_and_timeout_none_lost_none_twice(
    env: Env,
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    state.plan = {BIG[0]: ["500", "500"], BIG[1]: ["timeout"], SMALL[0]: ["500"]}
    escalations = _escalate_rings(env, url)
    assert len(escalations) == len(BIG + SMALL)

    # two workers race for the same outbox: leases keep each attempt to one of them
    sessions = make_sessionmaker(make_engine(env.url))
    workers = [DeliveryWorker(sessions, CONFIG) for _ in range(2)]
    threads = [threading.Thread(target=w.drain, kwargs={"timeout": 30}) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.close()

    with sessions() as session:
        assert repository.outbox_counts(session=session) == {"delivered": len(escalations)}
        esc_rows = {a: repository.get_escalation(i, session=session) for a, i in escalations.items()}
        keys = {a: e.idempotency_key for a, e in esc_rows.items() if e is not None}
        log: dict[str, list[WebhookDelivery]] = defaultdict(list)
        for acct, esc_id in escalations.items():
            messages = repository.outbox_of(esc_id, session=session)
            log[acct] = repository.deliveries_of([m.id for m in messages], session=session)
    # none lost, none processed twice: every key processed exactly once, every POST correctly signed
    assert state.processed == Counter(keys.values())
    assert state.rejected == 0 and all(p["signed"] for p in state.posts)
    # retried exactly as planned, and never sent once more after it was acknowledged
    expected = {acct: 1 for acct in escalations} | {BIG[0]: 3, BIG[1]: 2, SMALL[0]: 2}
    assert Counter(p["account"] for p in state.posts) == Counter(expected)
    for acct, rows in log.items():
        assert [r.attempt for r in rows] == list(range(1, expected[acct] + 1)), acct
        assert [r.outcome for r in rows] == ["retry"] * (expected[acct] - 1) + ["delivered"]
        assert {p["key"] for p in state.posts if p["account"] == acct} == {keys[acct]}
        assert sorted(int(p["attempt"]) for p in state.posts if p["account"] == acct) == [r.attempt for r in rows]
    assert [r.status_code for r in log[BIG[0]]] == [500, 500, 200]
    assert "HTTP 500" in (log[BIG[0]][0].error or "")
    assert log[BIG[1]][0].status_code is None and "Timeout" in (log[BIG[1]][0].error or "")
    # exponential backoff between attempts
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in zip(log[BIG[0]], log[BIG[0]][1:], strict=False)]
    assert gaps[0] >= CONFIG.backoff(1) and gaps[1] >= CONFIG.backoff(2)
    # the delivery log is visible through the API
    for platform in env.client("platform"):
        detail = platform.get(f"/v1/escalations/{escalations[BIG[0]]}").json()
        assert [d["outcome"] for d in detail["deliveries"]] == ["retry", "retry", "delivered"]
        assert detail["messages"][0]["status"] == "delivered" and detail["messages"][0]["attempts"] == 3
    sessions.kw["bind"].dispose()


def test_receivers_can_reject_replays_and_tampering(env: Env, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    _escalate_rings(env, url)
    sessions = make_sessionmaker(make_engine(env.url))
    worker = DeliveryWorker(sessions, CONFIG)
    worker.drain(timeout=10)
    worker.close()
    captured = state.posts[0]
    ts, sig, body = captured["headers"][TIMESTAMP_HEADER], captured["headers"][SIGNATURE_HEADER], captured["body"]
    assert sig == sign(SECRET, int(ts), body)
    assert verify_signature(SECRET, timestamp=ts, signature=sig, body=body)
    # the same request replayed ten minutes later is stale
    assert not verify_signature(SECRET, timestamp=ts, signature=sig, body=body, now=int(ts) + 600)
    # a new timestamp on the old signature, a changed body, another secret: all refused
    assert not verify_signature(SECRET, timestamp=str(int(ts) + 1), signature=sig, body=body)
    assert not verify_signature(SECRET, timestamp=ts, signature=sig, body=body.replace(b"prove", b"prov3"))
    assert not verify_signature("another-secret-0123456789", timestamp=ts, signature=sig, body=body)
    assert not verify_signature(SECRET, timestamp="soon", signature=sig, body=body)
    doc = orjson.loads(body)
    assert doc["type"] == "kyc.escalation.requested" and doc["idempotency_key"] == captured["key"]
    assert doc["outcome_path"] == f"/v1/escalations/{doc['escalation_id']}/outcome"
    sessions.kw["bind"].dispose()


def test_undeliverable_messages_are_parked_dead_after_max_attempts(
    env: Env,
    receiver: tuple[Receiver, str],
) -> None:
    state, url = receiver
    state.plan = {acct: ["500"] * 10 for acct in BIG + SMALL}
    escalations = _escalate_rings(env, url)
    sessions = make_sessionmaker(make_engine(env.url))
    worker = DeliveryWorker(sessions, DeliveryConfig(timeout=TIMEOUT, backoff_base=0.01, max_attempts=2, poll=0.02))
    stats = worker.drain(timeout=20)
    worker.close()
    assert stats.dead == len(escalations) and stats.delivered == 0 and stats.retried == len(escalations)
    with sessions() as session:
        assert repository.outbox_counts(session=session) == {"dead": len(escalations)}
    assert not state.processed
    sessions.kw["bind"].dispose()


def test_cli_worker_delivers_once_and_exits(
    env: Env,
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from distillguard.cli import app

    state, url = receiver
    state.plan = {SMALL[1]: ["500"]}
    escalations = _escalate_rings(env, url)
    for name, value in {
        "DATABASE_URL": env.url,
        "WEBHOOK_BACKOFF_BASE_SECONDS": "0.05",
        "WEBHOOK_POLL_SECONDS": "0.05",
        "WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT),
    }.items():
        monkeypatch.setenv(f"DISTILLGUARD_{name}", value)
    result = CliRunner().invoke(app, ["escalations", "deliver", "--once", "--timeout", "20"])
    assert result.exit_code == 0, result.output
    assert f"delivered {len(escalations)}, retries scheduled 1, dead 0" in result.output
    assert len(state.processed) == len(escalations)


def test_backoff_is_exponential_and_capped() -> None:
    config = DeliveryConfig(backoff_base=5, backoff_max=60)
    assert [config.backoff(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert timedelta(seconds=config.backoff(30)) == timedelta(seconds=60)
