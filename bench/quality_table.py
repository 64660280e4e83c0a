"""Detection quality over many simulated seeds, as the README's table: one command, one row per seed.

    python bench/quality_table.py [--seeds 7 8 101 ...] [--workdir /tmp/dg-quality] [--jobs 1]

Per seed: `distillguard simulate --seed N` (cached in the work directory), `distillguard replay`
of it into a fresh SQLite database with `--report`, then `detector.evaluate` of the report
against the seed's truth. Prints a Markdown table (precision, benign false-positive rate, recall
and minutes to first detection per campaign style, worst look-alike group) and flags each
figure that misses issue 4's targets with `**`. False-positive figures are given as the final
report has them and, in brackets, counting accounts flagged for a while and released since.
A script, not a test: ~1 minute per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STYLES = ("bulk", "heavy", "low_and_slow", "evasive")
# issue 4's targets: recall per style, and the limits every seed must keep
MIN_RECALL = {"bulk": 0.95, "heavy": 0.95, "low_and_slow": 0.90, "evasive": 0.90}
MIN_PRECISION, MAX_BENIGN_FP, MAX_GROUP_SHARE, MAX_MINUTES = 0.99, 0.001, 0.02, 60.0


def run_seed(seed: int, workdir: Path) -> dict[str, Any]:
    """Simulate (cached), replay and evaluate one seed; returns the evaluation with timings."""
    from detector.evaluate import evaluate

    data = workdir / f"seed-{seed}"
    if not (data / "truth.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "distillguard", "simulate", "--seed", str(seed), "--out", str(data)],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    db = data / "replay.sqlite"
    db.unlink(missing_ok=True)
    env = {
        **os.environ,
        "DISTILLGUARD_DATABASE_URL": f"sqlite:///{db}",
        "DISTILLGUARD_DATA_DIR": str(data / "data"),
        "COLUMNS": "200",
    }
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "distillguard",
            "replay",
            str(data / "events.jsonl.gz"),
            "--accounts",
            str(data / "accounts.jsonl.gz"),
            "--report",
            str(data / "report.json"),
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    truth = json.loads((data / "truth.json").read_text())
    figures = evaluate(truth, json.loads((data / "report.json").read_text()))
    figures["replay_seconds"] = seconds
    return figures


def _mark(text: str, bad: bool) -> str:
    return f"**{text}**" if bad else text


def row(seed: int, f: dict[str, Any]) -> str:
    """One Markdown row; figures that miss a target are in bold."""
    a = f["accounts"]
    recall = f["recall_by_style"]
    minutes: dict[str, float | None] = {}
    for c in f["campaigns"]:
        m = c["minutes_to_first_detection"]
        prev = minutes.get(c["style"], -1.0)
        # a style with several campaigns: its slowest campaign is the one that counts
        minutes[c["style"]] = None if m is None or prev is None else max(m, prev)
    worst = max(f["lookalikes"], key=lambda g: g["flagged_share"], default=None)
    worst_ever = max(f["lookalikes"], key=lambda g: g["ever_flagged_share"], default=None)
    cells = [
        str(seed),
        _mark(f"{a['precision']:.3f}", a["precision"] < MIN_PRECISION),
        _mark(f"{a['benign_false_positive_rate']:.3%}", a["benign_false_positive_rate"] > MAX_BENIGN_FP)
        + " ("
        + _mark(
            f"{a['benign_false_positive_rate_ever']:.3%}, {a['ever_false_positives']}",
            a["benign_false_positive_rate_ever"] > MAX_BENIGN_FP,
        )
        + ")",
        " / ".join(_mark(f"{recall[s]:.3g}", recall[s] < MIN_RECALL[s]) if s in recall else "-" for s in STYLES),
        " / ".join(
            "-"
            if s not in minutes
            else _mark("never" if minutes[s] is None else f"{minutes[s]:.0f}", (minutes[s] or 1e9) > MAX_MINUTES)
            for s in STYLES
        ),
        "-"
        if worst is None or worst_ever is None
        else _mark(f"{worst['flagged_share']:.1%}", worst["flagged_share"] > MAX_GROUP_SHARE)
        + " ("
        + _mark(
            f"{worst_ever['ever_flagged_share']:.1%} {worst_ever['kind']}",
            worst_ever["ever_flagged_share"] > MAX_GROUP_SHARE,
        )
        + ")",
        f"{f['replay_seconds']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 101, 202, 303, 404, 505, 606, 707, 808, 909])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dg-quality"))
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side (each replay is one process)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(args.seeds, pool.map(lambda s: run_seed(s, args.workdir), args.seeds), strict=True))
    header = (
        "| seed | precision | benign FP (released included, count) | recall bulk / heavy / low-and-slow / evasive "
        "| minutes to first detection (same order) | worst look-alike group (released included) | replay s |"
    )
    lines = [header, "|" + "---|" * 7]
    lines += [row(seed, results[seed]) for seed in args.seeds]
    sys.stdout.write("\n".join(lines) + "\n")
    (args.workdir / "table.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
