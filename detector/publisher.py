"""Decisions out: every change of an account's action, to the compacted topic `account-decisions`.

Gateways read the topic's latest value per key (account_id) to rate-limit or block. The detector
publishes what its flags decide; the API publishes analysts' overrides through the same interface:

    publisher = make_publisher(settings)        # or NullDecisionPublisher()
    publisher.publish([Decision(...)])          # or JSON-ready mappings with account_id and action
    publisher.flush()                           # returns once the broker has them (acks=all)
    publisher.close()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from core.schema import ACTIONS
from core.settings import Settings
from detector.engine import Flag, TickOutcome

log = logging.getLogger(__name__)

DECISIONS_TOPIC = "account-decisions"


def rfc3339(ts: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix (CONTRACT.md timestamps)."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Decision:
    """One account's current action and why; the message value of `account-decisions`.

    `decided_at` is event time for the detector (the tick that decided), wall-clock time for an
    analyst's override. `source` says who decided: "detector" or e.g. "analyst:<name>".
    """

    account_id: str
    action: str
    reason: str
    decided_at: datetime
    score: float | None = None
    ring_id: str | None = None
    source: str = "detector"

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if self.decided_at.tzinfo is None:
            raise ValueError("decided_at must carry a zone")

    def to_json(self) -> bytes:
        """The message value: JSON of every field, decided_at as RFC 3339 with a Z."""
        doc: dict[str, Any] = asdict(self)
        doc["decided_at"] = rfc3339(self.decided_at)
        if self.score is not None:
            doc["score"] = round(self.score, 6)
        return orjson.dumps(doc)


# A decision as a Decision, or as a JSON-ready mapping with at least account_id and action (the
# API's overrides): a mapping's other fields travel as they are, decided_at/score/ring_id/source
# are filled in when missing.
DecisionLike = Decision | Mapping[str, Any]


def decision_message(decision: DecisionLike) -> tuple[bytes, bytes]:
    """(key, value) of a decision's `account-decisions` message."""
    if isinstance(decision, Decision):
        return decision.account_id.encode(), decision.to_json()
    doc = dict(decision)
    account_id, action = doc.get("account_id"), doc.get("action")
    if not isinstance(account_id, str) or not account_id:
        raise ValueError("a decision needs an account_id")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    decided_at = doc.get("decided_at") or doc.get("updated_at") or datetime.now(UTC)
    doc["decided_at"] = rfc3339(decided_at) if isinstance(decided_at, datetime) else decided_at
    doc.setdefault("reason", "")
    doc.setdefault("score", None)
    doc.setdefault("ring_id", None)
    doc.setdefault("source", "analyst")
    return account_id.encode(), orjson.dumps(doc, default=str)


class DecisionPublisher(Protocol):
    """Where decisions go. `publish` may buffer; `flush` returns once everything is durable."""

    def publish(self, decisions: Sequence[DecisionLike]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class NullDecisionPublisher:
    """Publishes nowhere (replay, tests, a worker run without a broker for decisions)."""

    def __init__(self) -> None:
        self.count = 0

    def publish(self, decisions: Sequence[DecisionLike]) -> None:
        for d in decisions:
            decision_message(d)  # the same validation as the real publisher
        self.count += len(decisions)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class KafkaDecisionPublisher:
    """Produces decisions keyed by account_id to a compacted topic, created if missing."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = DECISIONS_TOPIC,
        partitions: int = 4,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.count = 0
        ensure_compacted_topic(bootstrap_servers, topic, partitions=partitions)
        # acks=all: a gateway must never read a decision the broker could still lose
        config: dict[str, Any] = {"acks": "all", "linger_ms": 20, "retries": 10}
        config.update(producer_config or {})
        self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), **config)

    def publish(self, decisions: Sequence[DecisionLike]) -> None:
        for d in decisions:
            key, value = decision_message(d)
            self._producer.send(self.topic, key=key, value=value)
        self.count += len(decisions)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()


def make_publisher(settings: Settings, *, topic: str = DECISIONS_TOPIC) -> KafkaDecisionPublisher:
    """The Kafka publisher on the configured broker (DISTILLGUARD_KAFKA_BOOTSTRAP)."""
    return KafkaDecisionPublisher(settings.kafka_bootstrap, topic=topic)


def ensure_compacted_topic(bootstrap_servers: str, topic: str, *, partitions: int = 4) -> bool:
    """Create `topic` with cleanup.policy=compact unless it exists; returns True if created.

    Created before the first produce: a broker that auto-creates topics would otherwise make a
    delete-policy topic, and gateways would lose the latest decision of quiet accounts.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="distillguard-admin")
    try:
        if topic in set(admin.list_topics()):
            return False
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
        new = NewTopic(
            topic,
            num_partitions=partitions,
            replication_factor=min(3, brokers),
            topic_configs={"cleanup.policy": "compact"},
        )
        try:
            admin.create_topics([new])
        except TopicAlreadyExistsError:
            return False
        log.info("decisions topic created", extra={"topic": topic, "partitions": partitions})
        return True
    finally:
        admin.close()


def decision_for(flag: Flag, *, decided_at: datetime) -> Decision:
    """The detector's decision for a flagged account."""
    if flag.ring_id is not None:
        reason = f"member of ring {flag.ring_id}"
    elif flag.reasons:
        first = flag.reasons[0]
        reason = str(first.get("detail") or first.get("feature") or "anomalous account")
    else:
        reason = "anomalous account"
    return Decision(
        account_id=flag.account_id,
        action=flag.action,
        reason=reason,
        decided_at=decided_at,
        score=float(flag.score),
        ring_id=flag.ring_id,
        source="detector",
    )


def changed_decisions(flags: Mapping[str, Flag], published: dict[str, str], *, decided_at: datetime) -> list[Decision]:
    """Decisions for flags whose action differs from the last published one; updates `published`."""
    out = []
    for account_id, flag in flags.items():
        if published.get(account_id) != flag.action:
            out.append(decision_for(flag, decided_at=decided_at))
            published[account_id] = flag.action
    return out


def tick_decisions(outcomes: Iterable[TickOutcome], published: dict[str, str]) -> list[Decision]:
    """Each tick's changed actions in tick order, decided at that tick; updates `published`.

    An outcome's flags are as they stood at its tick, so one call that ran several ticks publishes
    what publishing after each tick would have.
    """
    out = []
    for outcome in outcomes:
        flags = {f.account_id: f for f in outcome.changed}
        out.extend(changed_decisions(flags, published, decided_at=outcome.tick))
    return out
