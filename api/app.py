"""The FastAPI application: triage for the security team, decisions and KYC hooks for the platform."""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from alembic.runtime.migration import MigrationContext
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import routes_admin, routes_platform, routes_triage
from api.cursors import decode_cursor, encode_cursor
from api.deps import (
    ADMIN,
    ANALYST,
    PLATFORM,
    RateLimiter,
    Services,
    TokenBucket,
    known_query_only,
    retry_after_header,
)
from api.fastpath import DecisionFastPath
from api.schemas import Health, Problem
from core.db import make_engine, make_sessionmaker, transaction
from core.errors import DistillguardError, TooManyRequests, Unauthorized
from core.settings import Settings
from detector.decisions import DecisionCache, DecisionPolicy, DecisionPublisher, make_publisher
from detector.escalations import sync_settings_endpoints
from detector.keys import KeyCache

__all__ = ["create_app", "decode_cursor", "encode_cursor"]

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
UNKNOWN_KEY_LOOKUPS_PER_SECOND, UNKNOWN_KEY_LOOKUPS_BURST = 50.0, 200
SECURED: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Input the schema admits but the operation cannot use"},
    401: {"model": Problem, "description": "Missing, unknown or revoked API key"},
    403: {"model": Problem, "description": "The key's scope does not allow this"},
    422: {"model": Problem, "description": "Invalid input"},
    429: {
        "model": Problem,
        "description": "The key's rate limit is exhausted",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}},
    },
}


def _problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, object]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, errors=errors).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def create_app(settings: Settings | None = None, *, publisher: DecisionPublisher | None = None) -> FastAPI:
    """Build the app against the configured database (caches start with the app's lifespan)."""
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    policy = DecisionPolicy.from_settings(settings)
    svc = Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        keys=KeyCache(sessions, refresh_seconds=settings.api_key_refresh_seconds),
        decisions=DecisionCache(
            sessions,
            policy,
            refresh_seconds=settings.decisions_refresh_seconds,
            publisher=publisher or make_publisher(settings),
        ),
        policy=policy,
        unknown_keys=TokenBucket(UNKNOWN_KEY_LOOKUPS_PER_SECOND, UNKNOWN_KEY_LOOKUPS_BURST),
        limiter=RateLimiter(
            {
                ANALYST: (settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
                ADMIN: (settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
                PLATFORM: (settings.platform_rate_limit_per_second, settings.platform_rate_limit_burst),
            }
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with transaction(sessions) as session:
            sync_settings_endpoints(settings, session=session)
        svc.keys.start()
        svc.decisions.start()
        if settings.api_runtime_tuning:
            _tune_runtime()
        log.info("api started", extra={"decisions": len(svc.decisions)})
        try:
            yield
        finally:
            svc.keys.stop()
            svc.decisions.stop()
            svc.decisions.publisher.close()

    app = FastAPI(
        title="distillguard",
        version="0.2.0",
        description=(
            "Alerts and rings of coordinated distillation accounts, their triage, per-account decisions "
            "for the gateways and KYC escalations. Every route but /healthz needs "
            "`Authorization: Bearer <key>` (scopes: analyst, platform, admin). Errors are "
            "application/problem+json."
        ),
        lifespan=lifespan,
        dependencies=[Depends(known_query_only)],
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.services = svc

    @app.exception_handler(DistillguardError)
    async def _domain_error(_: Request, exc: DistillguardError) -> JSONResponse:
        headers = None
        if isinstance(exc, TooManyRequests):
            headers = retry_after_header(exc)
        elif isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": "Bearer"}
        return _problem(exc.status_code, exc.title, exc.detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, object]] = []
        parts: list[str] = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            msg = str(e.get("msg", ""))
            errors.append({"loc": loc, "msg": msg, "type": str(e.get("type", ""))})
            parts.append(f"{'.'.join(loc)}: {msg}")
        return _problem(422, "Invalid request", "; ".join(parts) or "invalid request", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return _problem(exc.status_code, str(exc.detail), str(exc.detail), headers=headers)

    @app.exception_handler(DataError)
    async def _data_error(_: Request, exc: DataError) -> JSONResponse:
        # input the schema let through but the database cannot store: still the client's input
        log.warning("database refused a value", extra={"error": str(exc.orig)[:200]})
        return _problem(400, "Bad request", "a value cannot be stored (out of range or invalid characters)")

    @app.exception_handler(IntegrityError)
    async def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity conflict", extra={"error": str(exc.orig)[:200]})
        return _problem(409, "Conflict", "the change conflicts with existing data; reload and retry")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # a bug, not the client's fault: log it whole, answer in the same format as every error
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
        return _problem(500, "Internal error", "the server failed to handle this request; it has been logged")

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz() -> Health:
        """Liveness, database reachability and schema revision (no key needed)."""
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                revision = MigrationContext.configure(conn).get_current_revision()
            return Health(status="ok", database="ok", schema_revision=revision)
        except Exception as exc:  # any driver error means the database is unreachable
            return Health(status="degraded", database=f"error: {type(exc).__name__}", schema_revision=None)

    # wraps the app: the decision lookup's success case is answered before routing and dependencies
    app.add_middleware(DecisionFastPath, services=svc)
    for router in (routes_triage.router, routes_platform.router, routes_admin.router):
        app.include_router(router, responses=SECURED)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_openapi(
                get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _tune_runtime() -> None:
    """Process-wide tuning for the decision lookup's tail latency (a server process, not a test run)."""
    # background refreshes hold the GIL in bursts: a short switch interval keeps the event loop's
    # wait for it under a millisecond
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
    # the framework, the models and the loaded cache are long-lived: keep them out of every future
    # cyclic-GC pass (a full pass over them is a 100+ ms pause); refcounting still frees them
    gc.collect()
    gc.freeze()


def _problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Document every error response as application/problem+json with the Problem schema."""
    problem = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for path in schema.get("paths", {}).values():
        for method, operation in path.items():
            # any write may also meet a 409 (a concurrent change caught by a constraint)
            if method != "get" and "security" in operation:
                operation["responses"].setdefault("409", {"description": "Conflicts with the current state"})
            for code, response in operation.get("responses", {}).items():
                if str(code)[0] in "45":
                    response["content"] = {PROBLEM: problem}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
