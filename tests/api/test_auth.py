"""Keys, scopes and rate limits: every route refuses what it must, on SQLite and real PostgreSQL."""
# ruff: noqa: F401, F811  (fixtures are imported by name and requested as parameters)

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_fixtures import BIG_RING, SOLO, Env, env, shared_env
from fastapi.testclient import TestClient

from core.db import transaction
from detector import keys

# (method, path, json body): targets that pass validation but change nothing when allowed
# (a missing object, a refused transition), so the matrix can share one database
MISSING = 2147483647
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/alerts", None),
    ("GET", "/v1/alerts/1", None),
    ("POST", f"/v1/alerts/{MISSING}/transitions", {"status": "acknowledged", "comment": "x"}),
    ("GET", "/v1/rings", None),
    ("GET", f"/v1/rings/{BIG_RING}", None),
    ("POST", "/v1/rings/r-missing/actions", {"action": "block", "comment": "x"}),
    ("GET", f"/v1/decisions/{SOLO[0]}", None),
    ("PUT", "/v1/decisions/matrix-acct", {"action": "allow", "comment": "x"}),
    ("DELETE", "/v1/decisions/matrix-nobody", None),
    ("GET", "/v1/escalations", None),
    ("GET", f"/v1/escalations/{MISSING}", None),
    ("POST", f"/v1/escalations/{MISSING}/outcome", {"outcome": "verified"}),
    ("GET", "/v1/audit", None),
    ("GET", "/v1/keys", None),
    ("POST", "/v1/keys", {"name": "matrix", "scope": "analyst"}),
    ("DELETE", f"/v1/keys/{MISSING}", None),
    ("GET", "/v1/webhooks", None),
    ("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/matrix"}),
    ("DELETE", f"/v1/webhooks/{MISSING}", None),
]
WRITES_ALERTS = {"/transitions", "/actions"}
ALLOWED: dict[str, set[str]] = {
    "analyst": {
        "GET /v1/alerts",
        "GET /v1/alerts/1",
        "POST /transitions",
        "GET /v1/rings",
        "GET /v1/rings/r-big",
        "POST /actions",
        "GET /v1/decisions",
        "PUT /v1/decisions",
        "DELETE /v1/decisions",
        "GET /v1/escalations",
        "GET /v1/escalations/n",
        "GET /v1/audit",
    },
    "platform": {
        "GET /v1/alerts",
        "GET /v1/alerts/1",
        "GET /v1/rings",
        "GET /v1/rings/r-big",
        "GET /v1/decisions",
        "GET /v1/escalations",
        "GET /v1/escalations/n",
        "POST /outcome",
    },
}


def _label(method: str, path: str) -> str:
    """A route's name in ALLOWED."""
    for tail in ("/transitions", "/actions", "/outcome"):
        if path.endswith(tail):
            return f"{method} {tail}"
    if path.startswith("/v1/decisions"):
        return f"{method} /v1/decisions"
    if path.startswith("/v1/escalations/"):
        return f"{method} /v1/escalations/n"
    return f"{method} {path}"


def _allowed(scope: str, method: str, path: str) -> bool:
    return scope == "admin" or _label(method, path) in ALLOWED[scope]


@pytest.fixture(scope="module")
def anon(shared_env: Env) -> Iterator[TestClient]:
    yield from shared_env.client(None)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize("scope", ["analyst", "platform", "admin"])
def test_scope_matrix(
    anon: TestClient,
    shared_env: Env,
    scope: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    r = anon.request(method, path, json=body, headers=shared_env.headers(scope))
    if _allowed(scope, method, path):
        assert r.status_code not in (401, 403), r.text
        assert r.status_code < 500
    else:
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert scope in r.json()["detail"]


def test_platform_keys_cannot_change_alerts_and_analysts_cannot_change_configuration() -> None:
    for method, path, _ in ROUTES:
        if any(path.endswith(t) for t in WRITES_ALERTS):
            assert not _allowed("platform", method, path)
        if path.startswith(("/v1/keys", "/v1/webhooks")):
            assert not _allowed("analyst", method, path)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer dg_wrong", "Bearer " + "x" * 5000]
)
def test_every_route_but_healthz_needs_a_valid_key(
    anon: TestClient, method: str, path: str, body: dict[str, Any] | None, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    r = anon.request(method, path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert anon.get("/healthz").status_code == 200


def test_every_documented_route_is_in_the_matrix(anon: TestClient) -> None:
    documented = {
        (m.upper(), p) for p, ops in anon.get("/openapi.json").json()["paths"].items() for m in ops if p != "/healthz"
    }
    covered = set()
    for method, path, _ in ROUTES:
        match = next((d for d in documented if d[0] == method and _same_route(d[1], path)), None)
        assert match, (method, path)
        covered.add(match)
    assert covered == documented


def _same_route(template: str, path: str) -> bool:
    a, b = template.strip("/").split("/"), path.strip("/").split("/")
    return len(a) == len(b) and all(x == y or x.startswith("{") for x, y in zip(a, b, strict=True))


def test_revoked_key_is_refused(env: Env) -> None:
    for c in env.client("platform"):
        assert c.get("/v1/decisions/a").status_code == 200
        with transaction(env.sessions()) as session:
            keys.revoke_key(env.key_ids["platform"], session=session)
        c.app.state.services.keys.load()  # type: ignore[attr-defined]  # what the background refresh does
        r = c.get("/v1/decisions/a")
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_rate_limit_per_key_is_a_429_with_retry_after(env: Env) -> None:
    for c in env.client("analyst", api_rate_limit_per_second=1.0, api_rate_limit_burst=3):
        codes = [c.get("/v1/rings").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/v1/rings")
        assert r.status_code == 429
        assert r.headers["content-type"].startswith("application/problem+json")
        assert int(r.headers["retry-after"]) >= 1
        assert "rate limit" in r.json()["detail"]
        # the budget is per key: another key is unaffected, and platform keys have their own limits
        assert c.get("/v1/rings", headers=env.headers("admin")).status_code == 200
        assert c.get("/v1/decisions/a", headers=env.headers("platform")).status_code == 200


def test_decision_fast_path_agrees_with_the_route(env: Env) -> None:
    from api.schemas import DecisionOut

    for c in env.client("platform", platform_rate_limit_per_second=1.0, platform_rate_limit_burst=3):
        svc = c.app.state.services  # type: ignore[attr-defined]
        fast = c.get(f"/v1/decisions/{SOLO[0]}")
        assert fast.status_code == 200 and fast.headers["content-type"] == "application/json"
        assert fast.json() == svc.decisions.get(SOLO[0]).as_dict() | {"expires_at": fast.json()["expires_at"]}
        DecisionOut.model_validate(fast.json())
        # what the fast lane does not answer falls through to the route, with the route's errors
        assert c.get(f"/v1/decisions/{SOLO[0]}", params={"x": "1"}).status_code == 400
        assert c.get("/v1/decisions/" + "a" * 129).status_code == 422
        limited = [c.get(f"/v1/decisions/{SOLO[0]}") for _ in range(3)][-1]
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # a key created elsewhere after the cache loaded: the route finds it, the fast lane then knows it
        with transaction(env.sessions()) as session:
            _, token = keys.create_key("late-gateway", "platform", session=session)
        assert svc.keys.cached(token) is None
        assert c.get(f"/v1/decisions/{SOLO[0]}", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert svc.keys.cached(token).name == "late-gateway"


def test_an_unexpected_error_is_a_problem_500(env: Env) -> None:
    from api_fixtures import FAST
    from fastapi.testclient import TestClient as Client

    from api.app import create_app
    from core.settings import Settings

    app = create_app(Settings(database_url=env.url, **FAST))

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("boom")

    app.state.services.decisions.reload = broken  # a bug after the commit
    with Client(app, raise_server_exceptions=False, headers=env.headers("analyst")) as c:
        r = c.put("/v1/decisions/x", json={"action": "block", "comment": "x"})
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/problem+json")
    assert "boom" not in r.text  # no internals leak to the client
    app.state.engine.dispose()


def test_random_tokens_cannot_flood_the_database(env: Env) -> None:
    from api.deps import TokenBucket

    for c in env.client(None):
        c.app.state.services.unknown_keys = TokenBucket(1.0, 3)  # type: ignore[attr-defined]
        codes = [c.get("/v1/rings", headers={"Authorization": f"Bearer dg_random{i}"}).status_code for i in range(5)]
        assert codes == [401, 401, 401, 429, 429]
        # a known key is answered from memory, whatever the flood
        assert c.get("/v1/rings", headers=env.headers("analyst")).status_code == 200


def test_token_bucket_refills_at_its_rate() -> None:
    from api.deps import TokenBucket

    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert [bucket.take(0.0), bucket.take(0.0)] == [0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token back after half a second
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(1.0)  # capped at the burst
