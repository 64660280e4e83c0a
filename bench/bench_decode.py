"""Contract decoding rate: records/s of `decode_records` on one polled-size batch of padded events.

    python bench/bench_decode.py [--events 50000] [--pad-to 1300] [--repeat 5]

Simulates events as bench_kafka.py does (about 1.3 KB each, one unknown `gateway_trace` field),
decodes them as one batch `--repeat` times and prints the best rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--pad-to", type=int, default=1300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from bench_kafka import simulate_padded

    from ingest.contract import decode_records

    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        path, _accounts, n, mean = simulate_padded(Path(tmp), args.events, args.pad_to, seed=3)
        records = path.read_bytes().splitlines()
    positions = [f"t/0@{i}" for i in range(n)]
    decode_records(records[:1000], positions=positions[:1000])  # warm up
    best = float("inf")
    for _ in range(args.repeat):
        started = time.perf_counter()
        batch = decode_records(records, positions=positions, source="t/0")
        best = min(best, time.perf_counter() - started)
    print(
        f"{n:,} records of {mean:,.0f} bytes: best of {args.repeat} {best * 1000:,.0f} ms = {n / best:,.0f} records/s "
        f"(accepted {batch.accepted.height:,}, rejected {batch.rejected.height:,})"
    )


if __name__ == "__main__":
    main()
