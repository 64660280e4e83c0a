"""The FastAPI application: health, alerts and rings, read through the detector's repository."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from alembic.runtime.migration import MigrationContext
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import AlertOut, AlertPage, Health, Problem, RingDetail, RingOut
from core.db import make_engine, make_sessionmaker
from core.errors import BadRequest, DistillguardError, NotFound
from core.settings import Settings
from detector import repository

PROBLEM = "application/problem+json"
Severity = Literal["low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "resolved", "false_positive"]


def _problem(status: int, title: str, detail: str, errors: list[dict[str, object]] | None = None) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, errors=errors).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def encode_cursor(alert_id: int) -> str:
    """Opaque cursor for the next page."""
    return base64.urlsafe_b64encode(f"a:{alert_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The alert id a cursor points after; a malformed cursor is the client's error."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "a":
            raise ValueError(raw)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid cursor {cursor!r}: pass back the next_cursor of a previous page") from exc


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app against the configured database."""
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    sessions: sessionmaker[Session] = make_sessionmaker(engine)
    app = FastAPI(
        title="distillguard",
        version="0.1.0",
        description="Alerts and rings of coordinated distillation accounts.",
        responses={422: {"model": Problem, "description": "Invalid input"}},
    )
    app.state.settings = settings
    app.state.engine = engine

    def session() -> Iterator[Session]:
        with sessions() as s:
            yield s

    SessionDep = Annotated[Session, Depends(session)]

    @app.exception_handler(DistillguardError)
    async def _domain_error(_: Request, exc: DistillguardError) -> JSONResponse:
        return _problem(exc.status_code, exc.title, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return _problem(422, "Invalid request", detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), str(exc.detail))

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz() -> Health:
        """Liveness, database reachability and schema revision."""
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                revision = MigrationContext.configure(conn).get_current_revision()
            return Health(status="ok", database="ok", schema_revision=revision)
        except Exception as exc:  # any driver error means the database is unreachable
            return Health(status="degraded", database=f"error: {type(exc).__name__}", schema_revision=None)

    @app.get("/v1/alerts", response_model=AlertPage, tags=["alerts"])
    def list_alerts(
        db: SessionDep,
        status: Status | None = None,
        severity: Severity | None = None,
        ring_id: Annotated[str | None, Query(max_length=64)] = None,
        account_id: Annotated[str | None, Query(max_length=128)] = None,
        since: Annotated[datetime | None, Query(description="first_flagged_ts >= since (RFC 3339)")] = None,
        until: Annotated[datetime | None, Query(description="first_flagged_ts < until (RFC 3339)")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> AlertPage:
        """Alerts, newest first, filtered; cursor-paginated."""
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise BadRequest(f"{name} must carry a time zone, e.g. 2026-05-01T12:00:00Z")
        f = repository.AlertFilter(
            status=status, severity=severity, ring_id=ring_id, account_id=account_id, since=since, until=until
        )
        after = decode_cursor(cursor) if cursor else None
        rows = repository.list_alerts(f, session=db, limit=limit + 1, after_id=after)
        more = len(rows) > limit
        rows = rows[:limit]
        return AlertPage(
            items=[AlertOut.model_validate(r) for r in rows],
            total=repository.count_alerts(f, session=db),
            next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
        )

    @app.get("/v1/alerts/{alert_id}", response_model=AlertOut, tags=["alerts"],
             responses={404: {"model": Problem}})
    def get_alert(alert_id: int, db: SessionDep) -> AlertOut:
        """One alert with its reasons."""
        row = repository.get_alert(alert_id, session=db)
        if row is None:
            raise NotFound(f"no alert with id {alert_id}")
        return AlertOut.model_validate(row)

    @app.get("/v1/rings", response_model=list[RingOut], tags=["rings"])
    def list_rings(db: SessionDep) -> list[RingOut]:
        """Rings, highest score first."""
        return [RingOut.model_validate(r) for r in repository.list_rings(session=db)]

    @app.get("/v1/rings/{ring_id}", response_model=RingDetail, tags=["rings"],
             responses={404: {"model": Problem}})
    def get_ring(ring_id: str, db: SessionDep) -> RingDetail:
        """One ring with its members and shared evidence."""
        ring = repository.get_ring(ring_id, session=db)
        if ring is None:
            raise NotFound(f"no ring with id {ring_id}")
        return RingDetail(**RingOut.model_validate(ring).model_dump(), members=repository.ring_members(ring_id, session=db))

    return app
