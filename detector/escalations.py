"""KYC escalations: outbox rows written with the decision, delivered by a worker as signed webhooks.

Each message is POSTed as JSON with these headers:

- `X-Distillguard-Timestamp`: Unix seconds when this attempt was signed;
- `X-Distillguard-Signature`: `v1=` + hex HMAC-SHA256(secret, f"{timestamp}.{body}");
- `Idempotency-Key`: the same on every attempt and every endpoint for one escalation;
- `X-Distillguard-Attempt`: 1, 2, ...

A receiver recomputes the signature, rejects timestamps older than a few minutes (a captured
request cannot be replayed later) and ignores an idempotency key it has already processed
(an attempt that timed out on our side may have reached it). `verify_signature` does the first
two checks. Failed attempts are retried with exponential backoff; every attempt is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.errors import BadRequest, Conflict, NotFound
from core.settings import Settings
from detector import audit, repository
from detector.decisions import DecisionPolicy, set_override
from detector.keys import Principal
from detector.models import Escalation, WebhookEndpoint

log = logging.getLogger(__name__)

EVENT_REQUESTED = "kyc.escalation.requested"
OUTCOMES = ("verified", "failed")
SIGNATURE_HEADER = "X-Distillguard-Signature"
TIMESTAMP_HEADER = "X-Distillguard-Timestamp"
ATTEMPT_HEADER = "X-Distillguard-Attempt"
IDEMPOTENCY_HEADER = "Idempotency-Key"


# --- signatures ---


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value of `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: str,
    *,
    timestamp: str,
    signature: str,
    body: bytes,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """A receiver's check: the signature matches and the timestamp is recent (no replays)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


# --- endpoints (configuration) ---


def sync_settings_endpoints(settings: Settings, *, session: Session) -> list[WebhookEndpoint]:
    """Make the endpoints of `kyc_webhook_urls` exist and carry the configured secret."""
    if not settings.kyc_webhook_urls:
        return []
    if settings.kyc_webhook_secret is None:
        raise BadRequest("kyc_webhook_urls is set but kyc_webhook_secret is not: deliveries must be signed")
    secret = settings.kyc_webhook_secret.get_secret_value()
    return [
        repository.upsert_endpoint(
            {
                "url": _valid_url(url),
                "secret": secret,
                "active": True,
                "source": "settings",
                "created_at": datetime.now(UTC),
            },
            session=session,
        )
        for url in settings.kyc_webhook_urls
    ]


def add_endpoint(url: str, *, session: Session, secret: str | None = None) -> tuple[WebhookEndpoint, str]:
    """Register (or re-activate) an endpoint; returns it and its signing secret."""
    secret = secret or secrets.token_urlsafe(32)
    if len(secret) < 16:
        raise BadRequest("a webhook secret needs at least 16 characters")
    row = repository.upsert_endpoint(
        {"url": _valid_url(url), "secret": secret, "active": True, "source": "api", "created_at": datetime.now(UTC)},
        session=session,
    )
    return row, secret


def deactivate_endpoint(endpoint_id: int, *, session: Session) -> WebhookEndpoint:
    """Stop sending new escalations to an endpoint."""
    row = repository.get_endpoint(endpoint_id, session=session)
    if row is None:
        raise NotFound(f"no webhook endpoint with id {endpoint_id}")
    repository.set_endpoint_active(row, False, session=session)
    return row


def _valid_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise BadRequest(f"invalid webhook URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BadRequest(f"webhook URL must be http(s)://host/...: {url!r}")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise BadRequest(f"webhook URL has no valid port: {url!r}")
    return url


# --- escalations ---


def escalate(
    account_id: str,
    *,
    actor: Principal,
    reason: str,
    session: Session,
    ring_id: str | None = None,
    now: datetime | None = None,
) -> tuple[Escalation, bool]:
    """Ask the KYC provider to verify an account; returns (escalation, created), reusing an open one."""
    # the escalation and one outbox message per active endpoint go into the caller's transaction,
    # the one that sets the require_kyc decision: neither exists without the other
    now = now or datetime.now(UTC)
    existing = repository.open_escalation_of(account_id, session=session)
    if existing is not None:
        return existing, False
    key = uuid.uuid4().hex
    endpoints = repository.list_endpoints(session=session, active_only=True)
    row = {
        "account_id": account_id,
        "ring_id": ring_id,
        "reason": reason,
        "status": "open",
        "idempotency_key": key,
        "created_by": actor.name,
        "created_at": now,
    }
    esc = repository.add_escalation(row, session=session)
    payload = {
        "type": EVENT_REQUESTED,
        "escalation_id": esc.id,
        "account_id": account_id,
        "ring_id": ring_id,
        "reason": reason,
        "requested_by": actor.name,
        "created_at": now.isoformat().replace("+00:00", "Z"),
        "idempotency_key": key,
        "outcome_path": f"/v1/escalations/{esc.id}/outcome",
    }
    for endpoint in endpoints:
        repository.add_outbox(
            {
                "escalation_id": esc.id,
                "endpoint_id": endpoint.id,
                "idempotency_key": key,
                "event_type": EVENT_REQUESTED,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
            session=session,
        )
    if not endpoints:
        log.warning("escalation has no webhook endpoint to go to", extra={"escalation_id": esc.id})
    audit.record(
        "escalation.create",
        actor=actor,
        target_type="escalation",
        target_id=esc.id,
        session=session,
        comment=reason,
        detail={"account_id": account_id, "ring_id": ring_id, "endpoints": len(endpoints)},
        now=now,
    )
    return esc, True


def record_outcome(
    escalation_id: int,
    outcome: str,
    *,
    actor: Principal,
    session: Session,
    policy: DecisionPolicy,
    comment: str | None = None,
    now: datetime | None = None,
) -> Escalation:
    """The provider's answer: verified -> allow, failed -> block; 409 once an outcome is recorded."""
    now = now or datetime.now(UTC)
    if outcome not in OUTCOMES:
        raise BadRequest(f"unknown outcome {outcome!r}: use verified or failed")
    esc = repository.get_escalation(escalation_id, session=session, for_update=True)
    if esc is None:
        raise NotFound(f"no escalation with id {escalation_id}")
    if esc.status != "open":
        raise Conflict(f"escalation {escalation_id} already has the outcome {esc.status!r}")
    repository.resolve_escalation(esc, outcome, session=session, now=now, comment=comment)
    verified = outcome == "verified"
    set_override(
        esc.account_id,
        "allow" if verified else "block",
        actor=actor,
        reason=f"KYC {outcome} (escalation {esc.id})" + (f": {comment}" if comment else ""),
        source="kyc",
        expires_at=now + (policy.kyc_verified_ttl if verified else policy.kyc_failed_ttl),
        session=session,
        policy=policy,
        now=now,
    )
    audit.record(
        f"escalation.{outcome}",
        actor=actor,
        target_type="escalation",
        target_id=esc.id,
        session=session,
        comment=comment,
        detail={"account_id": esc.account_id},
        now=now,
    )
    return esc


# --- delivery ---


@dataclass(frozen=True)
class DeliveryConfig:
    """The worker's knobs (a slice of Settings)."""

    timeout: float = 5.0
    backoff_base: float = 5.0
    backoff_max: float = 3600.0
    max_attempts: int = 20
    lease: float = 60.0
    poll: float = 1.0
    batch: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        """The configuration in `settings`."""
        return cls(
            timeout=settings.webhook_timeout_seconds,
            backoff_base=settings.webhook_backoff_base_seconds,
            backoff_max=settings.webhook_backoff_max_seconds,
            max_attempts=settings.webhook_max_attempts,
            # a lease shorter than an attempt would let a second worker send the same message
            lease=max(settings.webhook_lease_seconds, settings.webhook_timeout_seconds * 2),
            poll=settings.webhook_poll_seconds,
        )

    def backoff(self, attempts: int) -> float:
        """Delay before the next attempt after `attempts` failures (exponential, capped)."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** max(attempts - 1, 0)))


@dataclass
class DeliveryStats:
    """What a worker run did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0


class DeliveryWorker:
    """Sends due outbox messages; several workers may run (each message is leased to one)."""

    def __init__(
        self, sessions: sessionmaker[Session], config: DeliveryConfig, *, client: httpx.Client | None = None
    ) -> None:
        self.sessions = sessions
        self.config = config
        self.client = client or httpx.Client(follow_redirects=False)
        self.stats = DeliveryStats()

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def run_once(self) -> int:
        """Attempt every message due now; returns how many attempts were made."""
        attempts = 0
        while True:
            now = datetime.now(UTC)
            with transaction(self.sessions) as session:
                due = repository.due_outbox_ids(session=session, now=now, limit=self.config.batch)
            if not due:
                return attempts
            for outbox_id in due:
                attempts += int(self._attempt(outbox_id))

    def drain(self, *, timeout: float) -> DeliveryStats:
        """Deliver until nothing is pending (retries included) or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.run_once()
            with self.sessions() as session:
                pending = repository.outbox_counts(session=session).get("pending", 0)
            if not pending:
                break
            time.sleep(min(self.config.poll, max(deadline - time.monotonic(), 0)))
        return self.stats

    def run_forever(self, stop: threading.Event) -> None:
        """Deliver until `stop` is set, polling when idle."""
        while not stop.is_set():
            try:
                made = self.run_once()
            except Exception:  # database down: keep the worker alive and try again
                log.exception("delivery round failed")
                made = 0
            if not made:
                stop.wait(self.config.poll)

    def _attempt(self, outbox_id: int) -> bool:
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=self.config.lease)
        with transaction(self.sessions) as session:
            if not repository.claim_outbox(outbox_id, session=session, now=now, until=lease):
                return False  # another worker took it
            found = repository.outbox_message(outbox_id, session=session)
            assert found is not None
            message, endpoint = found
            url, secret, payload = endpoint.url, endpoint.secret, message.payload
            key, attempt = message.idempotency_key, message.attempts + 1
        body = orjson.dumps(payload)
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(secret, ts, body),
            IDEMPOTENCY_HEADER: key,
            ATTEMPT_HEADER: str(attempt),
            "User-Agent": "distillguard-webhooks/1",
        }
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            response = self.client.post(url, content=body, headers=headers, timeout=self.config.timeout)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = (time.perf_counter() - t0) * 1000
        finished = datetime.now(UTC)
        if error is None:
            outcome = "delivered"
            values: dict[str, Any] = {
                "status": "delivered",
                "attempts": attempt,
                "delivered_at": finished,
                "last_error": None,
            }
        elif attempt >= self.config.max_attempts:
            outcome = "dead"
            values = {"status": "dead", "attempts": attempt, "last_error": error}
        else:
            outcome = "retry"
            values = {
                "attempts": attempt,
                "last_error": error,
                "next_attempt_at": finished + timedelta(seconds=self.config.backoff(attempt)),
            }
        log_row = {
            "attempt": attempt,
            "started_at": started,
            "duration_ms": duration_ms,
            "status_code": status_code,
            "error": error,
            "outcome": outcome,
        }
        with transaction(self.sessions) as session:
            kept = repository.finish_attempt(outbox_id, session=session, lease=lease, values=values, log=log_row)
        if not kept:
            log.warning("delivery lease lost before the attempt was recorded", extra={"outbox_id": outbox_id})
        if outcome == "delivered":
            self.stats.delivered += 1
        elif outcome == "dead":
            self.stats.dead += 1
        else:
            self.stats.retried += 1
        level = logging.INFO if outcome == "delivered" else logging.WARNING
        log.log(
            level,
            "webhook attempt",
            extra={
                "outbox_id": outbox_id,
                "attempt": attempt,
                "outcome": outcome,
                "status_code": status_code,
                "error": error,
            },
        )
        return True
