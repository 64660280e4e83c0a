"""Labelled synthetic API logs with planted distillation rings and legitimate look-alikes.

`simulate(seed=..., out_dir=...)` writes `events.jsonl.gz` (CONTRACT.md section 1),
`accounts.jsonl.gz` (section 2) and `truth.json` (distillguard.truth/v1); the same seed gives
byte-identical files.
"""

from simulator.run import (
    ACCOUNTS_FILE,
    EVENTS_FILE,
    PARQUET_FILE,
    TRUTH_FILE,
    SimulationSummary,
    simulate,
)

__all__ = [
    "ACCOUNTS_FILE",
    "EVENTS_FILE",
    "PARQUET_FILE",
    "TRUTH_FILE",
    "SimulationSummary",
    "simulate",
]
