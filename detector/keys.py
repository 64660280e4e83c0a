"""API keys: random tokens shown once, stored as SHA-256, looked up from memory per request."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from core.errors import BadRequest, NotFound
from detector import repository
from detector.background import Periodic
from detector.models import ApiKey

log = logging.getLogger(__name__)

SCOPES = ("analyst", "platform", "admin")
TOKEN_PREFIX = "dg_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, name and scope."""

    key_id: int
    name: str
    scope: str


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(name: str, scope: str, *, session: Session, now: datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the token, which is never stored and cannot be shown again."""
    if scope not in SCOPES:
        raise BadRequest(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    name = name.strip()
    if not name or len(name) > 128:
        raise BadRequest("a key needs a name of 1 to 128 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = repository.add_api_key(
        {
            "name": name,
            "scope": scope,
            "key_hash": hash_token(token),
            "prefix": token[:10],
            "created_at": now or datetime.now(UTC),
        },
        session=session,
    )
    log.info("api key created", extra={"key_id": row.id, "key_name": name, "scope": scope})
    return row, token


def revoke_key(key_id: int, *, session: Session, now: datetime | None = None) -> ApiKey:
    """Revoke a key; it stops working at once in this process and within a refresh elsewhere."""
    key = repository.get_api_key(key_id, session=session)
    if key is None:
        raise NotFound(f"no API key with id {key_id}")
    if key.revoked_at is None:
        repository.revoke_api_key(key, session=session, now=now or datetime.now(UTC))
        log.info("api key revoked", extra={"key_id": key_id})
    return key


class KeyCache:
    """Token hash -> principal, in memory, reloaded in the background so revocations propagate."""

    # An unseen token is looked up in the database once (a key just created by the CLI works at
    # once), then remembered as unknown for `negative_seconds`: bad tokens cannot hammer the database.

    def __init__(
        self, sessions: sessionmaker[Session], *, refresh_seconds: float, negative_seconds: float = 5.0
    ) -> None:
        self._sessions = sessions
        self._negative_seconds = negative_seconds
        self._by_hash: dict[str, Principal] = {}
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()
        self._refresher = Periodic("api-key-refresh", refresh_seconds, self.load)

    def start(self) -> None:
        """Load now and keep reloading in the background."""
        self.load()
        self._refresher.start()

    def stop(self) -> None:
        """Stop reloading."""
        self._refresher.stop()

    def load(self) -> None:
        """Reload every active key."""
        with self._sessions() as session:
            keys = repository.list_api_keys(session=session, include_revoked=False)
        by_hash = {k.key_hash: Principal(k.id, k.name, k.scope) for k in keys}
        with self._lock:
            self._by_hash = by_hash
            self._unknown.clear()

    def cached(self, token: str) -> Principal | bool | None:
        """The principal if known, False if known to be invalid, None if the database must be asked."""
        digest = hash_token(token)
        found = self._by_hash.get(digest)
        if found is not None:
            return found
        seen = self._unknown.get(digest)
        if seen is not None and time.monotonic() - seen < self._negative_seconds:
            return False
        return None

    def fetch(self, token: str) -> Principal | None:
        """Look an unseen token up in the database and remember the answer."""
        digest = hash_token(token)
        with self._sessions() as session:
            key = repository.api_key_by_hash(digest, session=session)
        with self._lock:
            if key is None or key.revoked_at is not None:
                if len(self._unknown) > 10_000:  # bounded: random tokens must not grow memory
                    self._unknown.clear()
                self._unknown[digest] = time.monotonic()
                return None
            principal = Principal(key.id, key.name, key.scope)
            self._by_hash[digest] = principal
            return principal

    def lookup(self, token: str) -> Principal | None:
        """Resolve a token from memory, asking the database only for an unseen one."""
        hit = self.cached(token)
        if hit is None:
            return self.fetch(token)
        return hit if isinstance(hit, Principal) else None

    def forget(self, key_id: int) -> None:
        """Drop a revoked key now (the revoking process need not wait for a refresh)."""
        with self._lock:
            self._by_hash = {h: p for h, p in self._by_hash.items() if p.key_id != key_id}
