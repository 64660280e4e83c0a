"""Shared fixtures: databases built by Alembic, the prompt corpus, simulated logs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_databases import create_database
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_sessionmaker
from core.migrations import upgrade

REPO = Path(__file__).resolve().parent.parent


def corpus_path() -> Path | None:
    """The real prompt corpus if this checkout sits next to shared/ (as in CI), else None."""
    env = os.environ.get("DISTILLGUARD_PROMPTS_CORPUS")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "prompts" / "prompts.jsonl.gz")
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database upgraded to head by Alembic."""
    url = f"sqlite:///{tmp_path / 'test.db'}"
    upgrade(url)
    return url


def _service(variable: str, what: str, script: str) -> str:
    """A service scripts/test.sh started (its address in `variable`); skipped locally without it, a failure in CI."""
    value = os.environ.get(variable)
    if not value:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {variable} (scripts/test.sh starts {what})")
        pytest.skip(f"{variable} not set: start {script}")
    return value


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The Kafka broker's bootstrap address."""
    return _service("DISTILLGUARD_KAFKA_BOOTSTRAP", "the broker", "deploy/kafka/broker.sh")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The test PostgreSQL server's URL."""
    return _service("DISTILLGUARD_TEST_POSTGRES_URL", "PostgreSQL", "deploy/postgres/pg.sh")


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url, drop = create_database(postgres_admin_url)
    try:
        yield url
    finally:
        drop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sessions(request: pytest.FixtureRequest) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh database built by `alembic upgrade head`: SQLite, then real PostgreSQL."""
    url = request.getfixturevalue(f"{request.param}_url")
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()
