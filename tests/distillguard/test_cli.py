"""The newcomer's command: `distillguard demo` simulates, detects, and shows what it found."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_finds_the_planted_ring_and_stores_its_alerts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISTILLGUARD_DATABASE_URL"}
    env["DISTILLGUARD_DATA_DIR"] = str(tmp_path)
    # a small scenario (300 benign users, half a day) keeps the test short; the README's command
    # runs the same code on the default two days
    proc = subprocess.run(
        [sys.executable, "-m", "distillguard", "demo", "--no-serve", "--accounts", "300", "--days", "0.5"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "against the simulator's truth: precision" in " ".join(proc.stdout.split())
    demo = tmp_path / "demo"
    report = orjson.loads((demo / "report.json").read_bytes())
    truth = orjson.loads((demo / "truth.json").read_bytes())
    attackers = {a for a, t in truth["accounts"].items() if t["label"] == "attacker"}
    flagged = {a["account_id"] for a in report["accounts"] if a["flagged"]}
    assert report["rings"], "the planted rings surface as rings"
    assert len(flagged & attackers) >= 0.8 * len(attackers)
    assert len(flagged - attackers) <= 0.05 * len(flagged)
    with sqlite3.connect(demo / "demo.db") as db:
        (alerts,) = db.execute("select count(*) from alerts").fetchone()
    assert alerts >= len(flagged)
