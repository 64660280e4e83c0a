"""Trace how non-attacker accounts were flagged and released through a replay of one simulated seed.

    python bench/trace_flags.py DIR [--all]

DIR is a `distillguard simulate` output (events.jsonl.gz, accounts.jsonl.gz, truth.json), e.g. a
seed directory of bench/quality_table.py. Replays it through the engine (no database) and prints,
for every non-attacker account whose flag ever changed, each change in event time: solo or ring
member, active, the action the gateway was told, the first reason and the ring's size. The final
report keeps only an account's last state; this is where a released false alarm's cause shows.
`--all` prints attackers too. A diagnostic script, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    from core.settings import Settings
    from detector.engine import DetectionEngine
    from ingest.replay import detector_config, load_account_events
    from ingest.sources import FileSource

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--all", action="store_true", help="attackers too")
    args = parser.parse_args()
    truth = json.loads((args.dir / "truth.json").read_text())
    label = {a: v["label"] for a, v in truth["accounts"].items()}
    kind = {a: g["kind"] for g in truth["lookalikes"] for a in g["accounts"]}
    settings = Settings()
    engine = DetectionEngine(detector_config(settings))
    accounts, _, _ = load_account_events(args.dir / "accounts.jsonl.gz", settings=settings)
    if accounts.height:
        engine.add_account_events(accounts)
    history: dict[str, list[str]] = defaultdict(list)
    last: dict[str, tuple[bool, bool, bool, str]] = {}

    def record(outcomes: list) -> None:  # type: ignore[type-arg]
        for o in outcomes:
            for f in o.changed:
                if not args.all and label.get(f.account_id) == "attacker":
                    continue
                state = (f.solo, f.ring_id is not None, f.active, f.action)
                if last.get(f.account_id) == state:
                    continue
                last[f.account_id] = state
                ring = engine.rings.get(f.ring_id) if f.ring_id else None
                how = "solo" if f.solo else ("ring" if f.ring_id else "-")
                size = f" ring of {len(ring.members)}" if ring is not None else ""
                reason = f.reasons[0]["feature"] if f.reasons else "-"
                history[f.account_id].append(f"{o.tick:%d %H:%M} {how} {f.action}{size} ({reason})")

    for batch in FileSource(args.dir / "events.jsonl.gz").batches(batch_size=50_000, max_bytes=1 << 26):
        record(engine.ingest(batch.accepted))
    record(engine.flush())
    for account, changes in sorted(history.items(), key=lambda kv: (kind.get(kv[0], label.get(kv[0], "?")), kv[0])):
        group = kind.get(account, label.get(account, "?"))
        sys.stdout.write(f"{group:<22} {account}: " + " -> ".join(changes) + "\n")


if __name__ == "__main__":
    main()
