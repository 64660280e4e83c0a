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


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The Kafka broker started by scripts/test.sh; skipped locally without it, a failure in CI."""
    address = os.environ.get("DISTILLGUARD_KAFKA_BOOTSTRAP")
    if not address:
        if os.environ.get("CI"):
            pytest.fail("CI must provide DISTILLGUARD_KAFKA_BOOTSTRAP (scripts/test.sh starts the broker)")
        pytest.skip("DISTILLGUARD_KAFKA_BOOTSTRAP not set: start deploy/kafka/broker.sh")
    return address


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The test PostgreSQL server (deploy/postgres/pg.sh), or skip where it is not running."""
    url = os.environ.get("DISTILLGUARD_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide DISTILLGUARD_TEST_POSTGRES_URL (scripts/test.sh starts PostgreSQL)")
        pytest.skip("DISTILLGUARD_TEST_POSTGRES_URL not set: start deploy/postgres/pg.sh")
    return url


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
