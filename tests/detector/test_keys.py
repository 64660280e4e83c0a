"""API keys: random tokens shown once, only their SHA-256 stored, resolved from memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from core.db import make_engine, make_sessionmaker, transaction
from core.errors import BadRequest, NotFound
from core.migrations import upgrade
from detector import keys, repository
from detector.models import ApiKey


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[tuple[str, sessionmaker[Session]]]:
    url = request.getfixturevalue(f"{request.param}_url")
    upgrade(url)
    engine = make_engine(url)
    yield url, make_sessionmaker(engine)
    engine.dispose()


def test_created_keys_are_random_and_stored_hashed(db: tuple[str, sessionmaker[Session]]) -> None:
    _, sessions = db
    with transaction(sessions) as s:
        a, token_a = keys.create_key("gw", "platform", session=s)
        _, token_b = keys.create_key("gw", "platform", session=s)
    assert token_a != token_b and token_a.startswith("dg_") and len(token_a) >= 40
    with sessions() as s:
        rows = list(s.scalars(select(ApiKey)))
    assert {r.key_hash for r in rows} == {hashlib.sha256(t.encode()).hexdigest() for t in (token_a, token_b)}
    assert (
        all(token_a not in (r.key_hash, r.prefix, r.name) for r in rows if r.id == a.id)
        and rows[0].prefix == token_a[:10]
    )


@pytest.mark.parametrize(("name", "scope"), [("x", "root"), ("", "admin"), ("  ", "admin"), ("n" * 129, "admin")])
def test_bad_keys_are_refused(db: tuple[str, sessionmaker[Session]], name: str, scope: str) -> None:
    _, sessions = db
    with pytest.raises(BadRequest), transaction(sessions) as s:
        keys.create_key(name, scope, session=s)


def test_cache_lookup_negative_cache_revocation(db: tuple[str, sessionmaker[Session]]) -> None:
    _, sessions = db
    with transaction(sessions) as s:
        row, token = keys.create_key("ana", "analyst", session=s)
    cache = keys.KeyCache(sessions, refresh_seconds=60)
    assert cache.cached(token) is None  # not loaded yet
    assert cache.lookup(token) == keys.Principal(row.id, "ana", "analyst")
    assert cache.cached(token) == keys.Principal(row.id, "ana", "analyst")
    assert cache.lookup("dg_nope") is None and cache.cached("dg_nope") is False
    with transaction(sessions) as s:
        keys.revoke_key(row.id, session=s)
        with pytest.raises(NotFound):
            keys.revoke_key(10**6, session=s)
    cache.load()
    assert cache.lookup(token) is None
    with sessions() as s:
        assert repository.get_api_key(row.id, session=s).revoked_at is not None  # type: ignore[union-attr]


def test_forget_drops_a_key_at_once(db: tuple[str, sessionmaker[Session]]) -> None:
    _, sessions = db
    with transaction(sessions) as s:
        row, token = keys.create_key("ana", "analyst", session=s)
    cache = keys.KeyCache(sessions, refresh_seconds=60)
    cache.load()
    cache.forget(row.id)
    assert cache.cached(token) is None


def test_cli_creates_a_key_and_prints_it_once(db: tuple[str, sessionmaker[Session]]) -> None:
    from distillguard.cli import app

    url, sessions = db
    result = CliRunner().invoke(
        app, ["keys", "create", "--scope", "platform", "--name", "gateway-eu", "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    with sessions() as s:
        row = repository.api_key_by_hash(keys.hash_token(token), session=s)
    assert row is not None and (row.name, row.scope) == ("gateway-eu", "platform")
    listed = CliRunner().invoke(app, ["keys", "list", "--database-url", url])
    assert "gateway-eu" in listed.stdout and token not in listed.stdout
    bad = CliRunner().invoke(app, ["keys", "create", "--scope", "root", "--name", "x", "--database-url", url])
    assert bad.exit_code == 2 and "unknown scope" in bad.output
    revoked = CliRunner().invoke(app, ["keys", "revoke", str(row.id), "--database-url", url])
    assert revoked.exit_code == 0
