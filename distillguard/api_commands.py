"""API administration commands: `keys create|list|revoke` and the `escalations deliver` worker."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated

import typer
from rich.console import Console

from core.db import make_engine, make_sessionmaker, transaction
from core.errors import DistillguardError
from core.logging import configure_logging
from core.settings import Settings

console = Console(stderr=True)
out = Console()
log = logging.getLogger("distillguard.api")

keys_app = typer.Typer(help="API keys (scopes: analyst, platform, admin).", no_args_is_help=True)
escalations_app = typer.Typer(help="KYC escalation webhooks.", no_args_is_help=True)


def _settings(database_url: str | None) -> Settings:
    settings = Settings(database_url=database_url) if database_url else Settings()
    configure_logging(level=settings.log_level, as_json=settings.log_json)
    return settings


def _fail(exc: DistillguardError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc.detail}")
    return typer.Exit(2)


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="analyst, platform or admin.")],
    name: Annotated[str, typer.Option(help="Who or what uses the key (shown in the audit log).")],
    database_url: Annotated[str | None, typer.Option(help="Database URL (DISTILLGUARD_DATABASE_URL).")] = None,
) -> None:
    """Create an API key and print it once (only its SHA-256 is stored)."""
    from core.migrations import upgrade
    from detector import keys

    settings = _settings(database_url)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            row, token = keys.create_key(name, scope, session=session)
            key_id = row.id
    except DistillguardError as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    console.print(f"created {scope} key {key_id} ({name}); it is shown only now:")
    out.print(token, soft_wrap=True, highlight=False)


@keys_app.command("list")
def keys_list(
    database_url: Annotated[str | None, typer.Option(help="Database URL (DISTILLGUARD_DATABASE_URL).")] = None,
) -> None:
    """List keys (id, scope, name, prefix, revoked)."""
    from detector import repository

    settings = _settings(database_url)
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            for k in repository.list_api_keys(session=session):
                revoked = f"revoked {k.revoked_at.isoformat()}" if k.revoked_at else "active"
                out.print(f"{k.id}\t{k.scope}\t{k.name}\t{k.prefix}...\t{revoked}", highlight=False)
    finally:
        engine.dispose()


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="Key id (from `keys list`).")],
    database_url: Annotated[str | None, typer.Option(help="Database URL (DISTILLGUARD_DATABASE_URL).")] = None,
) -> None:
    """Revoke a key (running APIs drop it within api_key_refresh_seconds)."""
    from detector import keys

    settings = _settings(database_url)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            keys.revoke_key(key_id, session=session)
    except DistillguardError as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()
    out.print(f"revoked key {key_id}")


@escalations_app.command("deliver")
def escalations_deliver(
    once: Annotated[bool, typer.Option("--once", help="Deliver what is due (retries included) and exit.")] = False,
    timeout: Annotated[float, typer.Option(help="--once: give up on pending retries after this many seconds.")] = 60.0,
    database_url: Annotated[str | None, typer.Option(help="Database URL (DISTILLGUARD_DATABASE_URL).")] = None,
) -> None:
    """Send KYC escalations to the webhook endpoints (signed, retried with backoff, logged) until stopped."""
    # runs until SIGTERM/SIGINT (finishing the attempt in flight), or with --once until nothing is
    # pending or --timeout passes
    from detector.escalations import DeliveryConfig, DeliveryWorker, sync_settings_endpoints

    settings = _settings(database_url)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        with transaction(sessions) as session:
            sync_settings_endpoints(settings, session=session)
    except DistillguardError as exc:
        engine.dispose()
        raise _fail(exc) from exc
    worker = DeliveryWorker(sessions, DeliveryConfig.from_settings(settings))
    try:
        if once:
            stats = worker.drain(timeout=timeout)
        else:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            log.info("delivery worker started")
            worker.run_forever(stop)
            stats = worker.stats
    finally:
        worker.close()
        engine.dispose()
    out.print(f"delivered {stats.delivered}, retries scheduled {stats.retried}, dead {stats.dead}")


def register(app: typer.Typer) -> None:
    """Add the `keys` and `escalations` command groups to the CLI."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(escalations_app, name="escalations")
