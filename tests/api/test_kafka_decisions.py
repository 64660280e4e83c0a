"""With Kafka configured, every decision change made through the API is produced to `account-decisions`."""
# ruff: noqa: F401, F811  (fixtures are imported by name and requested as parameters)

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from api_fixtures import FAST, SMALL, SMALL_RING, Env, env
from fastapi.testclient import TestClient
from kafka import KafkaConsumer

from api.app import create_app
from core.settings import Settings
from detector.publisher import DECISIONS_TOPIC

pytestmark = pytest.mark.kafka


def _read(bootstrap: str, keys: set[str], timeout: float = 20) -> dict[str, list[dict[str, object]]]:
    consumer = KafkaConsumer(
        DECISIONS_TOPIC,
        bootstrap_servers=bootstrap.split(","),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    found: dict[str, list[dict[str, object]]] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and set(found) != keys:
            for message in consumer:
                key = message.key.decode()
                if key in keys:
                    found.setdefault(key, []).append(orjson.loads(message.value))
    finally:
        consumer.close()
    return found


@pytest.mark.parametrize("env", ["sqlite"], indirect=True)
def test_api_decision_changes_reach_the_topic(env: Env, bootstrap: str) -> None:
    acct = f"kafka-{uuid.uuid4().hex[:8]}"
    # the app builds its own publisher from settings (no injected one): the production path
    for analyst in _kafka_client(env, bootstrap):
        assert type(analyst.app.state.services.decisions.publisher).__name__ == "KafkaDecisionPublisher"  # type: ignore[attr-defined]
        analyst.put(f"/v1/decisions/{acct}", json={"action": "block", "comment": "abuse"})
        analyst.delete(f"/v1/decisions/{acct}", params={"comment": "appeal"})
        analyst.post(f"/v1/rings/{SMALL_RING}/actions", json={"action": "throttle", "comment": "slow"})
    found = _read(bootstrap, {acct, *SMALL})
    assert [m["action"] for m in found[acct]][-2:] == ["block", "allow"]
    assert found[acct][-2]["source"] == "analyst"
    assert all(found[m][-1]["action"] == "throttle" and found[m][-1]["source"] == "ring_action" for m in SMALL)


def _kafka_client(env: Env, bootstrap: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=env.url, decisions_kafka=True, kafka_bootstrap=bootstrap, **FAST))
    with TestClient(app, headers=env.headers("analyst")) as c:
        yield c
    app.state.engine.dispose()
