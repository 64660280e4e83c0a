"""Prometheus text exposition of the stream worker's figures, served from a background thread.

Written by hand (format 0.0.4) rather than with prometheus_client: a handful of series does not
justify a dependency, and the worker's numbers already live in one object.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# batch latency histogram buckets, seconds
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RATE_WINDOW_S = 30.0
# where a consume worker's time goes: the partition stage (on its thread), the ring stage with
# persisting and publishing (the loop), and the loop waiting for the partition stage (when that
# grows, the partition stage is the limit)
STAGES = ("partition", "ring", "waiting_for_partition")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class StreamMetrics:
    """Counters and gauges of one consume worker; thread-safe (the HTTP thread reads them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records_read = 0
        self.accepted = 0
        self.rejected = 0
        self.dead_letters = 0
        # valid records of the account-events topic, applied to the linking state in event time
        self.account_events = 0
        self.duplicates = 0
        self.alerts_written = 0
        self.alerts_raised = 0
        self.decisions_published = 0
        self.batches = 0
        self.db_failures = 0
        self.commits = 0
        self.lag: dict[tuple[str, int], int] = {}
        # wall seconds per stage: which one limits the worker (see STAGES)
        self.stage_seconds = dict.fromkeys(STAGES, 0.0)
        self._bucket_counts = [0] * len(BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0
        self._recent: deque[tuple[float, int]] = deque()

    def observe_batch(self, *, read: int, accepted: int, rejected: int, seconds: float) -> None:
        """Record one processed batch."""
        now = time.monotonic()
        with self._lock:
            self.batches += 1
            self.records_read += read
            self.accepted += accepted
            self.rejected += rejected
            self._latency_sum += seconds
            self._latency_count += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self._bucket_counts[i] += 1
            self._recent.append((now, read))
            while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
                self._recent.popleft()

    def set_lag(self, lag: dict[tuple[str, int], int]) -> None:
        """Replace the per-partition lag (end offset minus position)."""
        with self._lock:
            self.lag = dict(lag)

    def add(self, **deltas: int) -> None:
        """Add to named counters (dead_letters=3, alerts_raised=1, ...)."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def add_stage_seconds(self, stage: str, seconds: float) -> None:
        """Add wall seconds spent in one of STAGES."""
        with self._lock:
            self.stage_seconds[stage] += seconds

    def events_per_second(self) -> float:
        """Records per second over the last RATE_WINDOW_S seconds of wall-clock time."""
        with self._lock:
            return self._rate_locked()

    def _rate_locked(self) -> float:
        if not self._recent:
            return 0.0
        span = max(time.monotonic() - self._recent[0][0], 1.0)
        return sum(n for _, n in self._recent) / span

    def render(self) -> str:
        """The Prometheus text exposition."""
        with self._lock:
            lines: list[str] = []

            def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
                lines.append(f"# HELP {name} {help_}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in samples:
                    lines.append(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}")

            metric(
                "distillguard_records_total",
                "counter",
                "Records read from Kafka, by outcome.",
                [('{outcome="accepted"}', self.accepted), ('{outcome="rejected"}', self.rejected)],
            )
            metric(
                "distillguard_events_per_second",
                "gauge",
                f"Records processed per second over the last {RATE_WINDOW_S:g} s.",
                [("", self._rate_locked())],
            )
            metric(
                "distillguard_consumer_lag",
                "gauge",
                "End offset minus position, per assigned partition.",
                [(f'{{topic="{_label(t)}",partition="{p}"}}', lag) for (t, p), lag in sorted(self.lag.items())],
            )
            metric(
                "distillguard_account_events_total",
                "counter",
                "Valid account events read from the account-events topic.",
                [("", self.account_events)],
            )
            metric(
                "distillguard_dead_letters_total",
                "counter",
                "Records sent to the dead-letter topics (api-requests and account-events).",
                [("", self.dead_letters)],
            )
            metric(
                "distillguard_duplicates_total",
                "counter",
                "Redelivered events dropped by event_id.",
                [("", self.duplicates)],
            )
            metric(
                "distillguard_alerts_raised_total",
                "counter",
                "Accounts newly flagged.",
                [("", self.alerts_raised)],
            )
            metric(
                "distillguard_alerts_written_total",
                "counter",
                "Alert rows upserted (new or re-scored).",
                [("", self.alerts_written)],
            )
            metric(
                "distillguard_decisions_published_total",
                "counter",
                "Action changes produced to account-decisions.",
                [("", self.decisions_published)],
            )
            metric(
                "distillguard_db_failures_total",
                "counter",
                "Batches whose persistence failed and was retried.",
                [("", self.db_failures)],
            )
            metric(
                "distillguard_offset_commits_total",
                "counter",
                "Offset commits.",
                [("", self.commits)],
            )
            metric(
                "distillguard_stage_seconds_total",
                "counter",
                "Wall seconds spent per stage (the partition stage runs on a thread beside the loop).",
                [(f'{{stage="{stage}"}}', seconds) for stage, seconds in self.stage_seconds.items()],
            )
            lines.append("# HELP distillguard_batch_seconds Time to validate, detect and persist one batch.")
            lines.append("# TYPE distillguard_batch_seconds histogram")
            for bound, count in zip(BUCKETS, self._bucket_counts, strict=True):
                lines.append(f'distillguard_batch_seconds_bucket{{le="{bound:g}"}} {count}')
            lines.append(f'distillguard_batch_seconds_bucket{{le="+Inf"}} {self._latency_count}')
            lines.append(f"distillguard_batch_seconds_sum {self._latency_sum:g}")
            lines.append(f"distillguard_batch_seconds_count {self._latency_count}")
            return "\n".join(lines) + "\n"


class MetricsServer:
    """`GET /metrics` on a daemon thread; `close()` stops it."""

    def __init__(self, metrics: StreamMetrics, *, host: str = "127.0.0.1", port: int = 9108) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = metrics.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # scrapes every few seconds would drown the worker's own logs
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics served", extra={"url": f"http://{host}:{self.port}/metrics"})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
