"""The decision lookup's fast lane: answered before FastAPI's routing and dependency machinery.

Gateways call `GET /v1/decisions/{account_id}` for every request they proxy, so its cost is the
API's capacity. This ASGI middleware answers only the plain success case (a cached key that may
read decisions, within its rate limit, a well-formed account id, no query string) with the same
body the FastAPI route returns; everything else (no key, unknown key, 429, bad id) falls through
to the route, so errors keep one implementation.
"""

from __future__ import annotations

from typing import Any

import orjson

from detector.keys import Principal

PREFIX = "/v1/decisions/"
READERS = frozenset({"analyst", "platform", "admin"})
_HEADERS = [(b"content-type", b"application/json")]


class DecisionFastPath:
    """Pure ASGI middleware in front of the app (see module docstring)."""

    def __init__(self, app: Any, *, services: Any) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            return await self.app(scope, receive, send)
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return await self.app(scope, receive, send)
        account_id = path[len(PREFIX) :]
        if not account_id or len(account_id) > 128 or "/" in account_id or "\x00" in account_id:
            return await self.app(scope, receive, send)
        token = _bearer(scope["headers"])
        if token is None:
            return await self.app(scope, receive, send)
        svc = self.services
        who = svc.keys.cached(token)
        # over its limit: the route answers the 429 (with Retry-After) itself
        if not isinstance(who, Principal) or who.scope not in READERS or not svc.limiter.allow(who):
            return await self.app(scope, receive, send)
        body = orjson.dumps(svc.decisions.get(account_id).as_dict())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() != b"bearer" or not credentials or len(credentials) > 256:
                return None
            try:
                return credentials.decode("ascii")
            except UnicodeDecodeError:
                return None
    return None
