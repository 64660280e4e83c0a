"""Throw-away PostgreSQL databases for tests: one per test (or per module), dropped afterwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError


def create_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh, empty database next to `admin_url`'s, and the function that drops it."""
    name = f"dg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, _ = admin_url.rpartition("/")

    def drop() -> None:
        try:
            # FORCE ends the test's leftover sessions; an autovacuum worker that has just started
            # on the new database can make it fail (signalling it needs pg_signal_backend, which
            # deploy/postgres/pg.sh grants, but an older cluster may lack): it finishes in moments
            for attempt in range(20):
                try:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    return
                except DBAPIError:
                    if attempt == 19:
                        raise
                    time.sleep(0.25)
        finally:
            admin.dispose()

    return f"{base}/{name}", drop
