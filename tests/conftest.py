"""Shared fixtures: databases built by Alembic, the prompt corpus, simulated logs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

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
    name = f"dg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, _ = postgres_admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
