"""Seeded databases, API keys and clients for the API tests (SQLite and real PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pg_databases import create_database

from api.app import create_app
from core.db import make_engine, make_sessionmaker, transaction
from core.migrations import upgrade
from core.settings import Settings
from detector import keys
from detector.engine import Flag, Ring, TickOutcome
from detector.service import record_outcomes

T0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
BIG_RING = "r-big"
SMALL_RING = "r-small"
BIG = [f"acct-big-{i}" for i in range(5)]
SMALL = [f"acct-small-{i}" for i in range(3)]
SOLO = [f"acct-solo-{i}" for i in range(4)]
# high limits unless a test is about rate limiting
FAST = {"api_rate_limit_per_second": 10_000.0, "api_rate_limit_burst": 10_000, "api_runtime_tuning": False}


class RecordingPublisher:
    """Stands in for the Kafka publisher: remembers every decision produced."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.flushed = 0

    def publish(self, decisions: Any) -> None:
        self.messages.extend(decisions)

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        pass


def _flag(acct: str, *, score: float, ring: str | None, action: str, n: int, at: datetime) -> Flag:
    return Flag(
        acct,
        T0,
        score,
        at,
        ring_id=ring,
        action=action,
        n_events=n,
        reasons=[
            {
                "feature": "events_per_active_hour",
                "value": 120.0 + n,
                "baseline": 4.0,
                "detail": "p99.9 of the population",
            }
        ],
    )


def seed(url: str) -> None:
    """Write detections through the detector's real write path: three hourly ticks, two rings, four solos."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    flags: dict[str, Flag] = {}
    for hour in range(3):
        at = T0 + timedelta(hours=hour)
        for i, acct in enumerate(BIG):
            flags[acct] = _flag(acct, score=0.99, ring=BIG_RING, action="block", n=100 * (hour + 1) + i, at=at)
        for i, acct in enumerate(SMALL):
            flags[acct] = _flag(acct, score=0.93, ring=SMALL_RING, action="require_kyc", n=40 * (hour + 1) + i, at=at)
        for i, acct in enumerate(SOLO):
            flags[acct] = _flag(acct, score=0.991 - i * 0.03, ring=None, action="throttle", n=600 * (hour + 1), at=at)
        rings = [
            Ring(BIG_RING, sorted(BIG), 0.99, T0, ["shared IP addresses: 3 value(s)", "shared user agents: 1"]),
            Ring(SMALL_RING, sorted(SMALL), 0.93, T0, ["shared payment instruments: 1 value(s)"]),
        ]
        with transaction(sessions) as session:
            record_outcomes([TickOutcome(at, 100, list(flags.values()), rings)], session=session)
    engine.dispose()


@dataclass
class Env:
    """A seeded database with one key per scope."""

    url: str
    tokens: dict[str, str]
    key_ids: dict[str, int]
    publisher: RecordingPublisher = field(default_factory=RecordingPublisher)

    def headers(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    def client(self, scope: str | None = "analyst", **settings: Any) -> Iterator[TestClient]:
        app = create_app(Settings(database_url=self.url, **{**FAST, **settings}), publisher=self.publisher)
        with TestClient(app) as c:
            if scope:
                c.headers.update(self.headers(scope))
            yield c
        app.state.engine.dispose()

    def sessions(self) -> Any:
        return make_sessionmaker(make_engine(self.url))


def make_keys(url: str) -> tuple[dict[str, str], dict[str, int]]:
    """One key per scope."""
    engine = make_engine(url)
    tokens, ids = {}, {}
    with transaction(make_sessionmaker(engine)) as session:
        for scope in keys.SCOPES:
            row, token = keys.create_key(f"test-{scope}", scope, session=session)
            tokens[scope], ids[scope] = token, row.id
    engine.dispose()
    return tokens, ids


def new_postgres_db(admin_url: str) -> tuple[str, Any]:
    """A fresh PostgreSQL database and the function that drops it."""
    return create_database(admin_url)


def database(request: pytest.FixtureRequest, tmp: Path) -> Iterator[str]:
    """An empty database of the requested backend, upgraded to head."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'api.db'}"
        upgrade(url)
        yield url
        return
    url, drop = new_postgres_db(request.getfixturevalue("postgres_admin_url"))
    try:
        upgrade(url)
        yield url
    finally:
        drop()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """A fresh seeded database per test, on SQLite and on PostgreSQL."""
    for url in database(request, tmp_path):
        seed(url)
        tokens, ids = make_keys(url)
        yield Env(url, tokens, ids)


@pytest.fixture(scope="module", params=BACKENDS)
def shared_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One seeded database per module and backend, for tests that only read or are refused."""
    for url in database(request, tmp_path_factory.mktemp("shared")):
        seed(url)
        tokens, ids = make_keys(url)
        yield Env(url, tokens, ids)
