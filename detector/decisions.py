"""Per-account decisions for the gateways: action, rate limit, reason, expiry, served from memory.

An account's decision is, in order: its override (analyst, ring action, suppression, KYC
outcome) while unexpired; else the detector's action from its latest alert while unexpired
(a false-positive alert gives none); else `allow`. The cache holds both layers in memory and
re-reads rows changed since its last refresh in the background; writes through the API reload
the accounts they touched right after commit, so the change is visible at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from core.errors import BadRequest
from core.settings import Settings
from detector import repository
from detector.background import Periodic
from detector.keys import Principal

log = logging.getLogger(__name__)

ACTIONS = ("allow", "throttle", "require_kyc", "block")
# how far back an incremental refresh re-reads: covers commits that land after a later one
# (updated_at is set before commit) and small clock skew between writers
REFRESH_OVERLAP = timedelta(seconds=30)
OVERLAP_EVERY = 30  # with the default 2 s refresh: the window is re-read once a minute


@dataclass(frozen=True)
class DecisionPolicy:
    """What each action means for the gateway and how long decisions last."""

    throttle_rpm: int = 60
    kyc_rpm: int = 0
    detector_ttl: timedelta = timedelta(hours=24)
    override_ttl: timedelta = timedelta(days=7)
    default_ttl: timedelta = timedelta(minutes=5)
    kyc_verified_ttl: timedelta = timedelta(days=90)
    kyc_failed_ttl: timedelta = timedelta(days=365)

    @classmethod
    def from_settings(cls, settings: Settings) -> DecisionPolicy:
        """The policy configured in `settings`."""
        return cls(
            throttle_rpm=settings.decisions_throttle_rpm,
            kyc_rpm=settings.decisions_kyc_rpm,
            detector_ttl=timedelta(seconds=settings.decisions_detector_ttl_seconds),
            override_ttl=timedelta(seconds=settings.decisions_override_ttl_seconds),
            default_ttl=timedelta(seconds=settings.decisions_default_ttl_seconds),
            kyc_verified_ttl=timedelta(seconds=settings.kyc_verified_ttl_seconds),
            kyc_failed_ttl=timedelta(seconds=settings.kyc_failed_ttl_seconds),
        )

    def rpm_for(self, action: str) -> int | None:
        """Requests per minute an action allows (None: no limit)."""
        return {"allow": None, "throttle": self.throttle_rpm, "require_kyc": self.kyc_rpm, "block": 0}[action]


@dataclass(frozen=True)
class Decision:
    """What a gateway should do with an account's requests, and until when."""

    account_id: str
    action: str
    rpm_limit: int | None
    reason: str
    expires_at: datetime
    source: str
    updated_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the API body and the `account-decisions` message value)."""
        return {
            "account_id": self.account_id,
            "action": self.action,
            "rpm_limit": self.rpm_limit,
            "reason": self.reason,
            "expires_at": _iso(self.expires_at),
            "source": self.source,
            "updated_at": _iso(self.updated_at) if self.updated_at else None,
        }


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


class DecisionPublisher(Protocol):
    """Where decision changes go besides the database (Kafka `account-decisions`, keyed by account)."""

    def publish(self, decisions: Sequence[dict[str, Any]]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class NoopPublisher:
    """The publisher when Kafka is not configured."""

    def publish(self, decisions: Sequence[dict[str, Any]]) -> None:
        """Drop the decisions."""

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""


def make_publisher(settings: Settings) -> DecisionPublisher:
    """The Kafka publisher (detector.publisher) when `decisions_kafka` is set, else a no-op one."""
    if not settings.decisions_kafka:
        return NoopPublisher()
    from detector.publisher import make_publisher as kafka_publisher  # imports kafka only when used

    return kafka_publisher(settings)


def validate_action(action: str) -> str:
    """An action name, or a 400."""
    if action not in ACTIONS:
        raise BadRequest(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    return action


def set_override(
    account_id: str,
    action: str,
    *,
    actor: Principal,
    reason: str,
    source: str,
    expires_at: datetime,
    session: Session,
    policy: DecisionPolicy,
    rpm_limit: int | None = None,
    now: datetime | None = None,
) -> None:
    """Give an account a decision that outranks the detector's until `expires_at`."""
    now = now or datetime.now(UTC)
    validate_action(action)
    if expires_at <= now:
        raise BadRequest("expires_at must be in the future")
    if action in ("block",) and rpm_limit not in (None, 0):
        raise BadRequest("a blocked account has no request budget: leave rpm_limit out")
    repository.upsert_override(
        {
            "account_id": account_id,
            "action": action,
            "rpm_limit": policy.rpm_for(action) if rpm_limit is None else rpm_limit,
            "reason": reason,
            "source": source,
            "actor": actor.name,
            "expires_at": expires_at,
            "created_at": now,
            "updated_at": now,
        },
        session=session,
    )


def clear_override(account_id: str, *, actor: Principal, session: Session, now: datetime | None = None) -> bool:
    """End an account's override now (kept as an expired row so every cache sees the change)."""
    now = now or datetime.now(UTC)
    row = repository.get_override(account_id, session=session)
    if row is None or row.expires_at <= now:
        return False
    repository.upsert_override(
        {
            "account_id": account_id,
            "action": row.action,
            "rpm_limit": row.rpm_limit,
            "reason": f"cleared by {actor.name}: {row.reason}",
            "source": row.source,
            "actor": actor.name,
            "expires_at": now,
            "created_at": row.created_at,
            "updated_at": now,
        },
        session=session,
    )
    return True


class DecisionCache:
    """Every account's decision layers in memory; `get` never touches the database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: DecisionPolicy,
        *,
        refresh_seconds: float = 2.0,
        publisher: DecisionPublisher | None = None,
    ) -> None:
        self._sessions = sessions
        self.policy = policy
        self.publisher = publisher or NoopPublisher()
        # account -> (alert id, its updated_at, detector decision or None for a false positive)
        self._base: dict[str, tuple[int, datetime, Decision | None]] = {}
        self._overrides: dict[str, Decision] = {}
        self._alerts_seen: datetime | None = None
        self._overrides_seen: datetime | None = None
        self._loaded = False
        self._rounds = 0
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        self._refresher = Periodic("decision-cache-refresh", refresh_seconds, self.refresh)

    # --- lifecycle ---
    def start(self) -> None:
        """Load everything, then refresh in the background."""
        self.refresh()
        self._refresher.start()

    def stop(self) -> None:
        """Stop refreshing and flush the publisher."""
        self._refresher.stop()
        try:
            self.publisher.flush()
        except Exception:  # shutting down: report, do not mask the shutdown
            log.exception("decision publisher flush failed")

    # --- reads ---
    def get(self, account_id: str, now: datetime | None = None) -> Decision:
        """The account's decision in force at `now`."""
        if not self._loaded:  # used without start() (a script, a test client without lifespan)
            self.refresh()
        now = now or datetime.now(UTC)
        override = self._overrides.get(account_id)
        if override is not None and override.expires_at > now:
            return override
        base = self._base.get(account_id)
        if base is not None and base[2] is not None and base[2].expires_at > now:
            return base[2]
        return Decision(
            account_id=account_id,
            action="allow",
            rpm_limit=None,
            reason="no decision in force",
            expires_at=now + self.policy.default_ttl,
            source="default",
        )

    def __len__(self) -> int:
        return len(self._base.keys() | self._overrides.keys())

    # --- loading ---
    def refresh(self) -> None:
        """Re-read alerts and overrides changed since the last refresh (everything the first time)."""
        # most rounds read what changed after the newest change seen; every OVERLAP_EVERY-th round
        # reads again from REFRESH_OVERLAP earlier, for rows that committed after newer ones (or
        # carry the same timestamp as the newest seen)
        self._rounds += 1
        overlap = REFRESH_OVERLAP if self._rounds % OVERLAP_EVERY == 0 else timedelta(0)
        with self._lock, self._sessions() as session:
            since = None if self._alerts_seen is None else self._alerts_seen - overlap
            alerts = repository.alert_decisions_changed_since(since, session=session)
            since = None if self._overrides_seen is None else self._overrides_seen - overlap
            overrides = repository.overrides_changed_since(since, session=session)
            self._apply(alerts, overrides)
            self._loaded = True

    def reload(self, account_ids: Iterable[str]) -> list[Decision]:
        """Re-read some accounts now (after a write) and publish their decisions; returns them."""
        ids = sorted(set(account_ids))
        if not ids:
            return []
        with self._lock, self._sessions() as session:
            alerts = repository.alert_decisions_of(ids, session=session)
            overrides = repository.overrides_of(ids, session=session)
            self._apply(alerts, overrides, track=False)
        decisions = [self.get(a) for a in ids]
        try:
            self.publisher.publish([d.as_dict() for d in decisions])
        except Exception:  # committed already: the database stays the truth, the topic catches up later
            log.exception("publishing decisions failed", extra={"accounts": len(ids)})
        return decisions

    def _apply(self, alerts: Sequence[Any], overrides: Sequence[Any], *, track: bool = True) -> None:
        for row in alerts:
            current = self._base.get(row.account_id)
            # an older alert of the account (the newest one speaks), or one already applied
            if current is None or current[0] < row.id or (current[0] == row.id and current[1] != row.updated_at):
                self._base[row.account_id] = (row.id, row.updated_at, self._from_alert(row))
            if track and (self._alerts_seen is None or row.updated_at > self._alerts_seen):
                self._alerts_seen = row.updated_at
        for row in overrides:
            known = self._overrides.get(row.account_id)
            if known is not None and known.updated_at == row.updated_at:
                continue  # re-read by an overlapping refresh, unchanged
            self._overrides[row.account_id] = Decision(
                account_id=row.account_id,
                action=row.action,
                rpm_limit=row.rpm_limit,
                reason=row.reason,
                expires_at=row.expires_at,
                source=row.source,
                updated_at=row.updated_at,
            )
            if track and (self._overrides_seen is None or row.updated_at > self._overrides_seen):
                self._overrides_seen = row.updated_at

    def _from_alert(self, row: Any) -> Decision | None:
        if row.status == "false_positive" or row.action not in ACTIONS:
            return None
        ring = f", ring {row.ring_id}" if row.ring_id else ""
        return Decision(
            account_id=row.account_id,
            action=row.action,
            rpm_limit=self.policy.rpm_for(row.action),
            reason=f"detector: {row.severity} alert {row.id} (score {row.score:.3f}{ring}), {row.status}",
            expires_at=row.updated_at + self.policy.detector_ttl,
            source="detector",
            updated_at=row.updated_at,
        )
