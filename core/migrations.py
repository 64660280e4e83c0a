"""Run Alembic programmatically (CLI `db upgrade`, tests, demo)."""

from __future__ import annotations

from alembic.config import Config

from alembic import command
from core.db import alembic_ini_path


def alembic_config(url: str) -> Config:
    """An Alembic config for the repo's migrations pointed at `url`."""
    cfg = Config(str(alembic_ini_path()))
    cfg.set_main_option("script_location", str(alembic_ini_path().parent / "alembic"))
    # ConfigParser interpolation would choke on '%' in passwords
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision`."""
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The database's current revision, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    from core.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
