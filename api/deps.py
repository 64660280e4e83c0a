"""What every route depends on: the app's services, sessions, the caller's key, scopes and rate limits."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.errors import BadRequest, Forbidden, TooManyRequests, Unauthorized
from core.settings import Settings
from detector.decisions import DecisionCache, DecisionPolicy
from detector.keys import KeyCache, Principal

ANALYST, PLATFORM, ADMIN = "analyst", "platform", "admin"


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int, now: float | None = None) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> float:
        """Spend a token: 0.0 if there was one, else the seconds until there will be."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return (1.0 - self.tokens) / self.rate
        self.tokens -= 1.0
        return 0.0


class RateLimiter:
    """A token bucket per API key, in memory (per process)."""

    def __init__(self, limits: dict[str, tuple[float, int]]) -> None:
        self._limits = limits  # scope -> (tokens per second, bucket size)
        self._buckets: dict[int, TokenBucket] = {}

    def _wait(self, principal: Principal, now: float | None) -> float:
        bucket = self._buckets.get(principal.key_id)
        if bucket is None:
            rate, burst = self._limits.get(principal.scope, self._limits[ANALYST])
            bucket = self._buckets[principal.key_id] = TokenBucket(rate, burst, now)
        return bucket.take(now)

    def allow(self, principal: Principal, now: float | None = None) -> bool:
        """Spend one token of the key's bucket if there is one."""
        return self._wait(principal, now) == 0.0

    def take(self, principal: Principal, now: float | None = None) -> None:
        """Spend one token of the key's bucket, or raise 429 with the wait until the next one."""
        wait = self._wait(principal, now)
        if wait:
            bucket = self._buckets[principal.key_id]
            raise TooManyRequests(
                f"rate limit of key {principal.name!r} exceeded ({bucket.rate:g} requests/s, "
                f"burst {bucket.burst:g}); retry in {wait:.2f}s",
                retry_after=wait,
            )


@dataclass
class Services:
    """The long-lived objects of one app instance (app.state.services)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    keys: KeyCache
    decisions: DecisionCache
    policy: DecisionPolicy
    limiter: RateLimiter
    # database lookups of tokens not in memory: random tokens must not turn into a query flood
    unknown_keys: TokenBucket

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """The request boundary: one transaction, committed when the handler's work succeeds."""
        with transaction(self.sessions) as session:
            yield session


_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(dependant: Any) -> Iterator[str]:
    yield from (p.alias for p in dependant.query_params)
    for sub in dependant.dependencies:
        yield from _query_names(sub)


async def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not declare (a typo must not silently widen a filter)."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        names = _QUERY_NAMES[id(route)] = frozenset(_query_names(route.dependant))
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        allowed = ", ".join(sorted(names)) or "none"
        raise BadRequest(f"unknown query parameter(s) {', '.join(map(repr, unknown))}; this route takes: {allowed}")
    # every parameter takes one value: a repeated one would silently keep only its last value
    repeated = sorted(k for k in set(request.query_params) if len(request.query_params.getlist(k)) > 1)
    if repeated:
        names_list = ", ".join(map(repr, repeated))
        raise BadRequest(f"query parameter(s) {names_list} given more than once; each takes one value")


def services(request: Request) -> Services:
    """The app's services."""
    services: Services = request.app.state.services
    return services


def read_session(request: Request) -> Iterator[Session]:
    """A session for reads (nothing to commit)."""
    with services(request).sessions() as session:
        yield session


_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


async def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller's key, authenticated from memory and charged one token of its rate limit."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    token = credentials.credentials
    svc = services(request)
    hit = svc.keys.cached(token) if len(token) <= 256 else False
    if hit is None:
        wait = svc.unknown_keys.take()
        if wait:
            raise TooManyRequests("too many requests with unknown API keys; retry later", retry_after=wait)
        hit = await run_in_threadpool(svc.keys.fetch, token)
    if not isinstance(hit, Principal):
        raise Unauthorized("unknown or revoked API key")
    svc.limiter.take(hit)
    return hit


def _article(word: str) -> str:
    return "An" if word[:1] in "aeiou" else "A"


def require(*scopes: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency admitting only keys of `scopes`."""
    allowed = ", ".join(scopes)

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.scope not in scopes:
            article = _article(who.scope)
            raise Forbidden(f"{article} {who.scope} key cannot do this: it needs a key with scope {allowed}")
        return who

    return check


def retry_after_header(exc: TooManyRequests) -> dict[str, str]:
    """Retry-After in whole seconds, rounded up (never 0: clients would retry at once)."""
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}


SessionDep = Annotated[Session, Depends(read_session)]
ServicesDep = Annotated[Services, Depends(services)]
AnyKey = Annotated[Principal, Depends(require(ANALYST, PLATFORM, ADMIN))]
Triage = Annotated[Principal, Depends(require(ANALYST, ADMIN))]
Platform = Annotated[Principal, Depends(require(PLATFORM, ADMIN))]
Admin = Annotated[Principal, Depends(require(ADMIN))]
