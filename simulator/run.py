"""The simulation entry point: build every population, then write events, accounts and truth."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from simulator import catalog as c
from simulator.benign import benign_events_per_account, benign_users
from simulator.campaigns import bulk, evasive, heavy, low_and_slow
from simulator.corpus import load_corpus
from simulator.humans import HumanPrompts
from simulator.lookalikes import (
    app_system_prompt,
    benchmark_researcher,
    campus_nat,
    enterprise_batch,
)
from simulator.output import (
    account_event_lines,
    assemble,
    encode_event_lines,
    to_datetime,
    truth_document,
    write_bytes_gzip,
    write_gzip_lines,
    write_parquet,
)
from simulator.world import EventChunk, World

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl.gz"
ACCOUNTS_FILE = "accounts.jsonl.gz"
TRUTH_FILE = "truth.json"
PARQUET_FILE = "events.parquet"
GENERATOR = "distillguard.simulator/1"

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class SimulationSummary:
    """What a simulation wrote: paths, sizes per group, and the time span of the events."""

    out_dir: Path
    events_path: Path
    accounts_path: Path
    truth_path: Path
    parquet_path: Path | None
    seed: int
    n_events: int
    n_accounts: int
    start_ts: datetime
    end_ts: datetime
    first_ts: datetime
    last_ts: datetime
    corpus: str
    accounts_by_label: dict[str, int] = field(default_factory=dict)
    accounts_by_group: dict[str, int] = field(default_factory=dict)
    events_by_group: dict[str, int] = field(default_factory=dict)


def _size(rng: np.random.Generator, lo: int, hi: int, scale: float, floor: int) -> int:
    return max(floor, round(rng.uniform(lo, hi) * min(scale, 1.0)))


def simulate(
    *,
    seed: int,
    out_dir: Path,
    accounts: int = 3000,
    days: float = 2.0,
    start: datetime = datetime(2026, 5, 1, tzinfo=UTC),
    corpus: Path | None = None,
    target_events: int | None = None,
    progress: Progress | None = None,
    parquet: bool = False,
) -> SimulationSummary:
    """Write labelled synthetic API logs (events, account events, truth); same seed, same bytes."""
    if accounts < 1 or days <= 0:
        raise ValueError("accounts must be >= 1 and days > 0")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    t_begin = time.perf_counter()

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, min(1.0, max(0.0, fraction)))

    report("corpus", 0.0)
    prompt_corpus = load_corpus(corpus)
    start_ms = round(start.timestamp() * 1000)
    end_ms = start_ms + round(days * c.DAY_MS)
    world = World(seed=seed, start_ms=start_ms, end_ms=end_ms, corpus=prompt_corpus)
    prompts = HumanPrompts(world, world.rng("prompts"))
    scale = accounts / 3000.0
    sizes = world.rng("sizes")
    n_groups = max(1, round(scale))
    report("look-alikes", 0.05)

    for g in range(1, n_groups + 1):
        world.chunks.append(campus_nat(world, f"campus_nat-{g}", _size(sizes, 100, 300, scale, 25), prompts))
        world.chunks.append(enterprise_batch(world, f"enterprise_batch-{g}", int(sizes.integers(3, 7)), prompts))
    apps = [max(30, round(0.33 * accounts))] + ([max(15, round(0.1 * accounts))] if scale >= 0.5 else [])
    for i, n_users in enumerate(apps):
        world.chunks.append(app_system_prompt(world, f"app_system_prompt-{i + 1}", n_users, i, prompts))
    world.chunks.append(benchmark_researcher(world, "benchmark_researcher-1", 2 if scale >= 0.5 else 1))
    report("campaigns", 0.15)

    for g in range(1, n_groups + 1):
        world.chunks.append(bulk(world, f"c-bulk-{g}", _size(sizes, 200, 400, scale, 20)))
        world.chunks.append(low_and_slow(world, f"c-low_and_slow-{g}", _size(sizes, 100, 200, scale, 12)))
        world.chunks.append(heavy(world, f"c-heavy-{g}", int(np.clip(round(3 * scale), 2, 6))))
        world.chunks.append(evasive(world, f"c-evasive-{g}", _size(sizes, 30, 60, scale, 6), prompts))
    n_other = sum(len(ch) for ch in world.chunks)
    report("benign users", 0.25)

    n_benign = accounts
    if target_events is not None:
        per_account = benign_events_per_account(seed, start_ms, end_ms)
        # Reach the target with more people, not busier people: per-account behaviour stays real.
        n_benign = max(50, math.ceil(max(target_events - n_other, 0) / per_account * 1.08))
    _, benign = benign_users(world, n_benign, prompts)
    topup = 0
    while target_events is not None and n_other + len(benign) < target_events and topup < 3:
        # The pilot estimate fell short: add a few more people from a fresh stream.
        topup += 1
        short = target_events - n_other - len(benign)
        extra = math.ceil(short / max(len(benign) / n_benign, 1.0) * 1.2) + 10
        _, more = benign_users(world, extra, prompts, stream=f"benign-topup-{topup}")
        benign = EventChunk.concat([benign, more])
        n_benign += extra
    if target_events is not None and n_other + len(benign) > target_events:
        benign = _thin(world, benign, max(target_events - n_other, 0))
    world.chunks.append(benign)
    log.info(
        "populations generated",
        extra={
            "events": sum(len(ch) for ch in world.chunks),
            "accounts": len(world.accounts),
            "benign_accounts": n_benign,
            "seconds": round(time.perf_counter() - t_begin, 2),
        },
    )
    report("assembling", 0.4)

    asm = assemble(world)
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path = out_dir / EVENTS_FILE
    report("writing events", 0.5)
    write_gzip_lines(
        events_path,
        asm.events,
        encode_event_lines,
        progress=lambda f: report("writing events", 0.5 + 0.4 * f),
    )
    report("writing accounts", 0.9)
    accounts_path = out_dir / ACCOUNTS_FILE
    write_bytes_gzip(accounts_path, account_event_lines(world, asm))
    params = {
        "generator": GENERATOR,
        "accounts": accounts,
        "benign_accounts": n_benign,
        "days": days,
        "target_events": target_events,
        "corpus": prompt_corpus.name,
        "corpus_digest": prompt_corpus.digest,
    }
    truth = truth_document(world, asm, params)
    truth_path = out_dir / TRUTH_FILE
    truth_path.write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2) + b"\n")
    parquet_path = None
    if parquet:
        report("writing parquet", 0.95)
        parquet_path = out_dir / PARQUET_FILE
        write_parquet(parquet_path, asm.events)
    report("done", 1.0)

    by_label: dict[str, int] = {}
    by_group: dict[str, int] = {}
    events_by_group: dict[str, int] = {}
    per_acct = np.bincount(asm.acct, minlength=len(world.accounts))
    for i in asm.present.tolist():
        a = world.accounts[i]
        grp = a.group or a.label
        by_label[a.label] = by_label.get(a.label, 0) + 1
        by_group[grp] = by_group.get(grp, 0) + 1
        events_by_group[grp] = events_by_group.get(grp, 0) + int(per_acct[i])
    summary = SimulationSummary(
        out_dir=out_dir,
        events_path=events_path,
        accounts_path=accounts_path,
        truth_path=truth_path,
        parquet_path=parquet_path,
        seed=seed,
        n_events=int(asm.ts.size),
        n_accounts=int(asm.present.size),
        start_ts=to_datetime(start_ms),
        end_ts=to_datetime(end_ms),
        first_ts=to_datetime(int(asm.ts[0])),
        last_ts=to_datetime(int(asm.ts[-1])),
        corpus=prompt_corpus.name,
        accounts_by_label=dict(sorted(by_label.items())),
        accounts_by_group=dict(sorted(by_group.items())),
        events_by_group=dict(sorted(events_by_group.items())),
    )
    log.info(
        "simulation written",
        extra={
            "out_dir": str(out_dir),
            "events": summary.n_events,
            "accounts": summary.n_accounts,
            "seconds": round(time.perf_counter() - t_begin, 2),
        },
    )
    return summary


def _thin(world: World, chunk: EventChunk, keep: int) -> EventChunk:
    """Drop random benign events (never an account's first) so the total hits the target."""
    rng = world.rng("thin")
    order = np.lexsort((chunk.ts, chunk.acct))
    first = np.ones(len(chunk), bool)
    first[order[1:]] = chunk.acct[order[1:]] != chunk.acct[order[:-1]]
    n_drop = len(chunk) - max(keep, int(first.sum()))
    if n_drop <= 0:
        return chunk
    candidates = np.flatnonzero(~first)
    drop = rng.choice(candidates, size=min(n_drop, candidates.size), replace=False)
    mask = np.ones(len(chunk), bool)
    mask[drop] = False
    return chunk.take(mask)
