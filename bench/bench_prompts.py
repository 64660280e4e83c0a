"""Throughput of features.prompts.prompt_fingerprints against a naive per-prompt MinHash loop.

Events are built from the prompt corpus (read at run time, never stored): a share of templated harvesting
prompts (wrappers around corpus questions, each question asked once) and human prompts drawn with
replacement (repeats: common questions, retries). Prints prompts/s for
  * prompt_fingerprints (normalise + skeleton + MinHash + LSH + capability, once per distinct text), and
  * a straightforward alternative: per prompt, lowercase -> word 3-shingles -> 32-value numpy MinHash,
    over every event (no dedupe, no skeleton), timed on a subset,
plus peak RSS. Usage:
    python bench/bench_prompts.py [--events 200000] [--attack-share 0.3] [--naive-events 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from core import schema as s  # noqa: E402
from features import prompts as P  # noqa: E402

CORPUS = Path(
    os.environ.get("DISTILLGUARD_PROMPTS_CORPUS")
    or REPO_ROOT.parent / "shared" / "data" / "prompts" / "prompts.jsonl.gz"
)
WRAPPERS = [
    "Think step by step and show all your reasoning before answering: {q}",
    "{q}\nLet's think step by step.",
    "Solve the following problem. Put your final answer within \\boxed{{}}.\n\nProblem: {q}\n\nSolution:",
    "You are an expert tutor. Explain your reasoning in detail, then give the final answer.\n\nQuestion: {q}",
    "Write a Python solution for the following task. Include type hints and docstrings.\n\n{q}",
    '{q}\n\nFormat your response as JSON with keys "reasoning" and "answer".',
]


def build_events(n: int, attack_share: float, seed: int) -> pl.DataFrame:
    corpus = pl.read_ndjson(CORPUS)
    rng = random.Random(seed)
    texts = corpus["text"].to_list()
    human = corpus.filter(pl.col("kind") == "human")["text"].to_list()
    n_attack = int(n * attack_share)
    rows = []
    for i in range(n_attack):
        rows.append((f"ring-{i % 50}", WRAPPERS[i % 50 % len(WRAPPERS)].format(q=rng.choice(texts))))
    for _ in range(n - n_attack):
        rows.append((f"user-{rng.randrange(20_000)}", rng.choice(human)))
    rng.shuffle(rows)
    return pl.DataFrame(rows, schema=[s.ACCOUNT_ID, s.PROMPT], orient="row")


_MASK = (1 << 61) - 1
_RNG = np.random.default_rng(0)
_A = _RNG.integers(1, _MASK, 32, dtype=np.uint64)
_B = _RNG.integers(0, _MASK, 32, dtype=np.uint64)


def naive_minhash(text: str) -> int:
    words = re.findall(r"\w+", text.lower())
    shingles = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
    h = np.array([hash(x) & 0xFFFFFFFF for x in shingles], dtype=np.uint64)
    sig = ((np.outer(h, _A) + _B) % np.uint64(_MASK)).min(axis=0)
    return hash(sig[:4].tobytes())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--attack-share", type=float, default=0.3)
    ap.add_argument("--naive-events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"$ python {' '.join(sys.argv)}")
    print(
        f"python {platform.python_version()}, polars {pl.__version__}, numpy {np.__version__}, "
        f"cpus {os.cpu_count()}, corpus {CORPUS}"
    )

    events = build_events(args.events, args.attack_share, args.seed)
    n_distinct = events[s.PROMPT].n_unique()
    chars = events[s.PROMPT].str.len_chars().sum()
    print(
        f"events {events.height:,}  distinct prompts {n_distinct:,}  mean chars {chars / events.height:.0f}  "
        f"attack share {args.attack_share}"
    )

    lf = events.lazy()
    t0 = time.perf_counter()
    lf.head(1000).pipe(P.prompt_fingerprints).collect()  # numba load / compile
    print(f"warm-up (numba cache load or compile) {time.perf_counter() - t0:.2f}s")
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = lf.pipe(P.prompt_fingerprints).collect()
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(
        f"prompt_fingerprints: best {best:.3f}s of {args.repeat} -> {events.height / best:,.0f} events/s "
        f"({n_distinct / best:,.0f} distinct prompts/s); template ids {out[P.TEMPLATE_ID].n_unique():,}"
    )

    t0 = time.perf_counter()
    P.template_share(P.template_counts(out.lazy())).collect()
    P.capability_mix(P.template_counts(out.lazy())).collect()
    print(f"template_counts + template_share + capability_mix on fingerprinted events: {time.perf_counter() - t0:.3f}s")

    sub = events[s.PROMPT].head(args.naive_events).to_list()
    t0 = time.perf_counter()
    for text in sub:
        naive_minhash(text)
    dt = time.perf_counter() - t0
    print(
        f"naive per-prompt MinHash loop (word 3-shingles, numpy, no dedupe/skeleton) on {len(sub):,}: "
        f"{dt:.3f}s -> {len(sub) / dt:,.0f} events/s"
    )
    print(f"speed-up {events.height / best / (len(sub) / dt):.1f}x")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
