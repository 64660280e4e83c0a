"""Small simulated logs replayed once per test session (the slow part, shared)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from core.settings import Settings
from ingest.replay import ReplayResult, replay
from simulator import simulate

# Small enough for seconds, large enough for a population the model can learn from.
SMALL = {"seed": 11, "accounts": 600, "days": 1.0}


@dataclass
class Replayed:
    """A simulated log, its truth and the outcome of replaying it into a database."""

    directory: Path
    database_url: str
    result: ReplayResult
    truth: dict[str, Any]

    @property
    def report(self) -> dict[str, Any]:
        return self.result.report


def simulate_small(directory: Path, corpus: Path | None, **overrides: Any) -> Path:
    """Simulate the small scenario into `directory`; returns it."""
    params = {**SMALL, **overrides}
    simulate(out_dir=directory, corpus=corpus, **params)
    return directory


def replay_into(directory: Path, database_url: str, *, events: Path | None = None, **settings: Any) -> Replayed:
    """Replay `directory`'s simulated events (or `events`) with its accounts into `database_url`."""
    cfg = Settings(database_url=database_url, data_dir=directory / "state", **settings)
    result = replay(
        [events or directory / "events.jsonl.gz"],
        settings=cfg,
        accounts=directory / "accounts.jsonl.gz",
        report_path=directory / "report.json",
    )
    truth = orjson.loads((directory / "truth.json").read_bytes())
    return Replayed(directory=directory, database_url=database_url, result=result, truth=truth)
