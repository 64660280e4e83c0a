"""The `distillguard` command: simulate, replay, serve, db upgrade, demo."""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import DistillguardError, InputError
from core.logging import configure_logging
from core.settings import Settings

app = typer.Typer(
    name="distillguard",
    help="Catch coordinated distillation rings on LLM APIs. Settings come from DISTILLGUARD_* variables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)
out = Console()
log = logging.getLogger("distillguard")


def _settings(**overrides: Any) -> Settings:
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(level=settings.log_level, as_json=settings.log_json)
    return settings


@contextmanager
def _fail_cleanly():
    """Domain errors become one clear line and exit code 2, not a traceback."""
    try:
        yield
    except DistillguardError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(2) from exc


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command()
def simulate(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for events.jsonl.gz, accounts.jsonl.gz, truth.json.")
    ],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files.")] = 7,
    accounts: Annotated[int, typer.Option(help="Benign population size (look-alikes and rings scale with it).")] = 3000,
    days: Annotated[float, typer.Option(help="Length of the simulated window in days.")] = 2.0,
    events: Annotated[int | None, typer.Option(help="Aim for about this many events (scales benign volume).")] = None,
    corpus: Annotated[
        Path | None,
        typer.Option(help="Prompt corpus (prompts.jsonl.gz); default: found next to the repo, else built-in prompts."),
    ] = None,
    parquet: Annotated[bool, typer.Option(help="Also write events.parquet.")] = False,
) -> None:
    """Write labelled synthetic API logs with planted extraction rings and legitimate look-alikes."""
    settings = _settings()
    from simulator import simulate as run_simulation

    with _fail_cleanly(), _progress() as bar:
        task = bar.add_task("simulating", total=100, rate="")

        def on_progress(stage: str, fraction: float) -> None:
            bar.update(task, description=f"simulating: {stage}", completed=int(fraction * 100))

        summary = run_simulation(
            seed=seed,
            out_dir=out_dir,
            accounts=accounts,
            days=days,
            target_events=events,
            corpus=corpus or settings.prompts_corpus,
            progress=on_progress,
            parquet=parquet,
        )
        bar.update(task, completed=100)
    out.print(f"wrote {summary.n_events:,} events to {out_dir}")


@app.command()
def replay(
    files: Annotated[
        list[Path], typer.Argument(help="Event files: NDJSON, NDJSON.gz or Parquet (CONTRACT.md section 1).")
    ],
    accounts: Annotated[
        Path | None, typer.Option(help="Account events file (CONTRACT.md section 2) for enrichment.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the detection report (CONTRACT.md section 3) here.")
    ] = None,
    archive: Annotated[
        Path | None, typer.Option(help="Keep accepted events (unknown fields in `extra`) as Parquet here.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Events per processing batch (DISTILLGUARD_BATCH_SIZE).")
    ] = None,
    database_url: Annotated[str | None, typer.Option(help="Database URL (DISTILLGUARD_DATABASE_URL).")] = None,
) -> None:
    """Replay event files in event-time order: detect rings, store alerts, write the report.

    Malformed records go to `<file>.rejected.jsonl` beside each input, with the reason.
    """
    settings = _settings(batch_size=batch_size, database_url=database_url)
    doc = _run_replay(files, settings=settings, accounts=accounts, report=report, archive=archive)
    _print_summary(doc)


def _run_replay(
    files: list[Path], *, settings: Settings, accounts: Path | None, report: Path | None, archive: Path | None = None
) -> dict[str, Any]:
    from ingest.replay import replay as run_replay

    with _fail_cleanly(), _progress() as bar:
        task = bar.add_task("replaying", total=None, rate="")
        started = datetime.now()
        done = 0

        def on_batch(n: int) -> None:
            nonlocal done
            done += n
            elapsed = max((datetime.now() - started).total_seconds(), 1e-6)
            bar.update(task, completed=done, rate=f"{done / elapsed:,.0f} events/s")

        result = run_replay(
            files, settings=settings, accounts=accounts, report_path=report, archive_dir=archive, progress=on_batch
        )
    for path in result.rejected_files:
        console.print(f"[yellow]rejected records:[/yellow] {path}")
    if report is not None:
        console.print(f"report: {report}")
    return result.report


def _print_summary(doc: dict[str, Any], truth: dict[str, Any] | None = None) -> None:
    ev = doc["events"]
    out.print(
        f"events: read {ev['read']:,}, accepted {ev['accepted']:,}, rejected {ev['rejected']:,}, "
        f"duplicates {ev.get('duplicates', 0):,}; window {doc['window']['first_ts']} .. {doc['window']['last_ts']}"
    )
    labels = (truth or {}).get("accounts", {})
    rings = Table(title=f"Rings found: {len(doc['rings'])}", show_lines=False)
    for col in ("ring", "members", "score", "first flagged (event time)", "shared evidence"):
        rings.add_column(col)
    if labels:
        rings.add_column("truth")
    for r in doc["rings"]:
        row = [r["ring_id"], str(r["size"]), f"{r['score']:.3f}", r["first_flagged_ts"], "\n".join(r["evidence"][:3])]
        if labels:
            groups = Counter(
                str(labels.get(m, {}).get("group") or labels.get(m, {}).get("label")) for m in r.get("members", [])
            )
            row.append(", ".join(f"{g} x{n}" for g, n in groups.most_common(3)))
        rings.add_row(*row)
    out.print(rings)
    flagged = [a for a in doc["accounts"] if a["flagged"]]
    actions = Counter(a["action"] for a in flagged)
    reasons = Counter(r["feature"] for a in flagged for r in a["reasons"][:1])
    acc = Table(title=f"Accounts flagged: {len(flagged)}")
    acc.add_column("action")
    acc.add_column("accounts")
    for action, n in actions.most_common():
        acc.add_row(action, str(n))
    out.print(acc)
    top = Table(title="Top reasons (first reason of each flagged account)")
    top.add_column("feature")
    top.add_column("accounts")
    for feature, n in reasons.most_common(6):
        top.add_row(feature, str(n))
    out.print(top)
    if labels:
        flagged_ids = {a["account_id"] for a in flagged}
        attackers = {a for a, v in labels.items() if v.get("label") == "attacker"}
        tp = len(flagged_ids & attackers)
        precision = tp / len(flagged_ids) if flagged_ids else 0.0
        recall = tp / len(attackers) if attackers else 0.0
        out.print(
            f"against the simulator's truth: precision {precision:.3f}, recall {recall:.3f} "
            f"({tp} of {len(attackers)} attacker accounts, {len(flagged_ids) - tp} false positives)"
        )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (DISTILLGUARD_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (DISTILLGUARD_API_PORT).")] = None,
    database_url: Annotated[str | None, typer.Option(help="Database URL (DISTILLGUARD_DATABASE_URL).")] = None,
) -> None:
    """Serve the HTTP API (alerts, rings, health) with uvicorn."""
    settings = _settings(api_host=host, api_port=port, database_url=database_url)
    _serve(settings)


def _serve(settings: Settings) -> None:
    import uvicorn

    from api.app import create_app
    from core.migrations import upgrade

    with _fail_cleanly():
        upgrade(settings.database_url)
    console.print(f"API on http://{settings.api_host}:{settings.api_port} (docs at /docs); Ctrl-C stops it")
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    database_url: Annotated[str | None, typer.Option(help="Database URL (DISTILLGUARD_DATABASE_URL).")] = None,
) -> None:
    """Bring the database schema up to date (Alembic)."""
    from core.migrations import current, upgrade

    settings = _settings(database_url=database_url)
    upgrade(settings.database_url, revision)
    out.print(f"database at revision {current(settings.database_url)}")


@app.command()
def evaluate(
    truth: Annotated[Path, typer.Option(help="truth.json written by `simulate`.")],
    report: Annotated[Path, typer.Option(help="report.json written by `replay --report`.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON here.")] = None,
) -> None:
    """Score a report against the simulator's truth: precision, recall, false positives, time to detection."""
    from detector.evaluate import evaluate as run_evaluate

    _settings()
    with _fail_cleanly():
        for path in (truth, report):
            if not path.is_file():
                raise InputError(f"file not found: {path}")
        try:
            figures = run_evaluate(orjson.loads(truth.read_bytes()), orjson.loads(report.read_bytes()))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"cannot read truth or report: {exc}") from exc
    _print_evaluation(figures)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))


def _print_evaluation(figures: dict[str, Any]) -> None:
    a = figures["accounts"]
    table = Table(title="Accounts")
    for col in (
        "flagged",
        "precision",
        "recall",
        "benign FP rate",
        "false positives",
        "benign FP rate, released included",
    ):
        table.add_column(col)
    table.add_row(
        str(a["flagged"]),
        f"{a['precision']:.3f}",
        f"{a['recall']:.3f}",
        f"{a['benign_false_positive_rate']:.4%}",
        str(a["false_positives"]),
        f"{a['benign_false_positive_rate_ever']:.4%} ({a['ever_false_positives']})",
    )
    out.print(table)
    camp = Table(title="Campaigns")
    for col in (
        "campaign",
        "style",
        "accounts",
        "caught",
        "recall",
        "minutes to first detection",
        "rings",
        "in main ring",
    ):
        camp.add_column(col)
    for c in figures["campaigns"]:
        delay = c["minutes_to_first_detection"]
        camp.add_row(
            c["campaign_id"],
            c["style"],
            str(c["accounts"]),
            str(c["caught"]),
            f"{c['recall']:.3f}",
            "-" if delay is None else f"{delay:.1f}",
            str(c.get("rings", "-")),
            f"{c['main_ring_share']:.1%}" if "main_ring_share" in c else "-",
        )
    out.print(camp)
    if "rings" in figures:
        rings = Table(title=f"Reported rings: {figures['ring_summary']['reported']}")
        for col in ("ring", "members", "dominant campaign", "purity", "campaigns", "benign"):
            rings.add_column(col)
        for r in figures["rings"]:
            rings.add_row(
                r["ring_id"],
                str(r["size"]),
                r["dominant_campaign"] or "-",
                f"{r['purity']:.1%}",
                ", ".join(f"{k} x{n}" for k, n in r["campaigns"].items()) or "-",
                str(r["benign"]),
            )
        out.print(rings)
    look = Table(title="Legitimate look-alikes")
    for col in ("group", "kind", "accounts", "flagged", "share", "flagged at some point"):
        look.add_column(col)
    for g in figures["lookalikes"]:
        look.add_row(
            g["group_id"],
            g["kind"],
            str(g["accounts"]),
            str(g["flagged"]),
            f"{g['flagged_share']:.1%}",
            f"{g['ever_flagged']} ({g['ever_flagged_share']:.1%})",
        )
    out.print(look)


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 7,
    accounts: Annotated[int, typer.Option(help="Benign population size.")] = 3000,
    days: Annotated[float, typer.Option(help="Simulated days.")] = 2.0,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the API afterwards.")] = True,
    port: Annotated[int | None, typer.Option(help="API port.")] = None,
) -> None:
    """Simulate traffic with planted rings, detect them, show the result, serve the API on SQLite."""
    base = _settings()
    data = base.data_dir / "demo"
    db_url = (
        base.database_url
        if "DISTILLGUARD_DATABASE_URL" in __import__("os").environ
        else f"sqlite:///{data / 'demo.db'}"
    )
    settings = _settings(database_url=db_url, api_port=port)
    data.mkdir(parents=True, exist_ok=True)
    simulate(out_dir=data, seed=seed, accounts=accounts, days=days, events=None, corpus=None, parquet=False)
    doc = _run_replay(
        [data / "events.jsonl.gz"], settings=settings, accounts=data / "accounts.jsonl.gz", report=data / "report.json"
    )
    truth = orjson.loads((data / "truth.json").read_bytes())
    _print_summary(doc, truth)
    from detector.evaluate import evaluate as run_evaluate

    _print_evaluation(run_evaluate(truth, doc))
    if serve_api:
        _serve(settings)


def _register_plugins() -> None:
    """Commands that live in their own modules (streaming, API administration) join the app here."""
    import importlib

    for name in ("distillguard.stream_commands", "distillguard.api_commands"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(app)


_register_plugins()

if __name__ == "__main__":
    app()
