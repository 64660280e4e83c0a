"""`distillguard consume` and `distillguard produce`: the Kafka side of the command line."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the streaming commands to the CLI."""
    app.command()(consume)
    app.command()(produce)


@contextmanager
def _broker_errors(bootstrap: str) -> Iterator[None]:
    """An unreachable broker is one clear line and exit code 2, not a traceback."""
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    from distillguard.cli import console

    try:
        yield
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        console.print(f"[red]error:[/red] Kafka broker at {bootstrap} unavailable: {exc}")
        raise typer.Exit(2) from exc


def consume(
    topic: Annotated[str, typer.Option(help="Topic of API request events (CONTRACT.md section 1).")] = "api-requests",
    group: Annotated[str, typer.Option(help="Consumer group; also names the checkpoint file.")] = "distillguard",
    stop_at_end: Annotated[
        bool, typer.Option("--stop-at-end", help="Exit once caught up with every partition.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="Write the detection report (CONTRACT.md section 3) here.")
    ] = None,
    accounts: Annotated[
        Path | None,
        typer.Option(help="Account events file (CONTRACT.md section 2) for enrichment, read at the start."),
    ] = None,
    accounts_topic: Annotated[
        str,
        typer.Option(help="Topic of account events (CONTRACT.md section 2), read as the stream goes; '' for none."),
    ] = "account-events",
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port (/metrics).")] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface for the metrics endpoint.")] = "127.0.0.1",
    dlq_topic: Annotated[str | None, typer.Option(help="Dead-letter topic (default: <topic>.dlq).")] = None,
    decisions_topic: Annotated[
        str, typer.Option(help="Compacted topic of account decisions; '' to publish none.")
    ] = "account-decisions",
    checkpoint_interval: Annotated[
        float, typer.Option(help="Seconds between checkpoints (and offset commits); 0: after every poll.")
    ] = 30.0,
    batch_size: Annotated[int | None, typer.Option(help="Records per poll (DISTILLGUARD_BATCH_SIZE).")] = None,
    database_url: Annotated[str | None, typer.Option(help="Database URL (DISTILLGUARD_DATABASE_URL).")] = None,
) -> None:
    """Consume API request events from Kafka: detect, store alerts, publish decisions.

    The broker comes from DISTILLGUARD_KAFKA_BOOTSTRAP.

    Offsets are committed only after the batch is persisted and checkpointed (at least once; alerts
    are upserted by key, so redelivery changes nothing). Malformed records go to the dead-letter
    topic with the reason. SIGTERM/SIGINT finish the batch, commit and leave the group.
    """
    from distillguard.cli import _fail_cleanly, _print_summary, _settings, console, out
    from ingest.consumer import ConsumeOptions
    from ingest.consumer import consume as run_consume

    settings = _settings(batch_size=batch_size, database_url=database_url)
    # kafka-python's IO thread warns whenever our CPU-bound batches hold the GIL for 100 ms: noise
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)
    options = ConsumeOptions(
        topic=topic,
        group=group,
        stop_at_end=stop_at_end,
        report_path=report,
        accounts=accounts,
        accounts_topic=accounts_topic or None,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        dlq_topic=dlq_topic,
        decisions_topic=decisions_topic or None,
        checkpoint_interval_s=checkpoint_interval,
    )
    topics = " and ".join(options.topics)
    console.print(f"consuming {topics} as group {group} from {settings.kafka_bootstrap}; Ctrl-C stops it")
    with _fail_cleanly(), _broker_errors(settings.kafka_bootstrap):
        result = run_consume(settings, options)
    _print_summary(result.report)
    rate = result.records / result.seconds if result.seconds > 0 else 0.0
    out.print(
        f"consumed {result.records:,} records in {result.seconds:.2f} s ({rate:,.0f} records/s); "
        f"dead letters {result.dead_letters:,}; decisions published {result.decisions:,}; "
        f"{'caught up' if result.reached_end else 'stopped'}"
    )
    if report is not None:
        console.print(f"report: {report}")


def produce(
    files: Annotated[list[Path], typer.Argument(help="NDJSON, NDJSON.gz or Parquet files.")],
    topic: Annotated[str, typer.Option(help="Topic to produce to.")] = "api-requests",
    key: Annotated[str | None, typer.Option(help="JSON field used as the message key ('' for none).")] = "account_id",
) -> None:
    """Load event files into a topic, records unchanged (malformed lines too), keyed by account."""
    from kafka import KafkaProducer

    from distillguard.cli import _fail_cleanly, _progress, _settings, out
    from ingest.kafka_io import produce_files, producer_config, servers

    settings = _settings()
    with _broker_errors(settings.kafka_bootstrap):
        producer = KafkaProducer(bootstrap_servers=servers(settings.kafka_bootstrap), **producer_config())
    with _fail_cleanly(), _progress() as bar:
        task = bar.add_task(f"producing to {topic}", total=None, rate="")
        started = time.perf_counter()
        done = 0

        def on_progress(n: int) -> None:
            nonlocal done
            done += n
            rate = done / max(time.perf_counter() - started, 1e-6)
            bar.update(task, completed=done, rate=f"{rate:,.0f} records/s")

        try:
            n = produce_files(files, producer=producer, topic=topic, key_field=key or None, progress=on_progress)
        finally:
            producer.close()
    seconds = time.perf_counter() - started
    out.print(f"produced {n:,} records to {topic} in {seconds:.1f} s ({n / max(seconds, 1e-6):,.0f} records/s)")
