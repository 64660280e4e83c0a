"""Alembic owns the schema: an empty database upgrades to head, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

import detector.models  # noqa: F401
from core.db import Base
from core.migrations import current, upgrade

EXPECTED = {"alerts", "rings", "ring_members"}


def _check(url: str) -> None:
    assert current(url) is None
    upgrade(url)
    assert current(url) is not None
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert tables >= EXPECTED
        # the migrations build exactly the tables the models declare
        assert set(Base.metadata.tables) <= tables
        for table in Base.metadata.tables.values():
            cols = {c["name"] for c in inspect(engine).get_columns(table.name)}
            assert {c.name for c in table.columns} == cols, table.name
    finally:
        engine.dispose()
    upgrade(url)  # idempotent


def test_upgrade_empty_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'empty.db'}")


@pytest.mark.postgres
def test_upgrade_empty_postgres(postgres_url: str) -> None:
    _check(postgres_url)
