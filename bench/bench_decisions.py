"""Latency of `GET /v1/decisions/{account_id}` at a fixed request rate against a real uvicorn server.

    python bench/bench_decisions.py                      # SQLite, 1,000 requests/s for 10 s
    python bench/bench_decisions.py --rate 1000 --seconds 20 --database-url postgresql+psycopg://...

Seeds a database through the detector's write path (flagged accounts, a few rings, analyst
overrides), creates a platform key, starts `uvicorn api.app:create_app --factory` on 127.0.0.1 in
a subprocess and drives it open-loop: request i is due at start + i/rate whatever happened to
earlier ones, over a pool of keep-alive connections. Latency is measured from the moment a request
was due (so a stalled server cannot hide its queue: no coordinated omission) to its last byte.
The load loop is bounded by --seconds and a hard deadline, talks to 127.0.0.1 only, and stops the
server when done. Prints p50/p90/p99/p99.9/max; target p99 <= 5 ms at 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.db import make_engine, make_sessionmaker, transaction  # noqa: E402
from core.migrations import upgrade  # noqa: E402
from detector import keys  # noqa: E402
from detector.decisions import DecisionPolicy, set_override  # noqa: E402
from detector.engine import Flag, Ring, TickOutcome  # noqa: E402
from detector.service import record_outcomes  # noqa: E402

HOST = "127.0.0.1"


def seed(url: str, accounts: int) -> str:
    """Flag `accounts` accounts (10% in rings, 5% overridden) and return a platform key."""
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    ids = [f"acct-{i:07d}" for i in range(accounts)]
    flags = []
    for i, acct in enumerate(ids):
        ring = f"r-{i // 50:05d}" if i % 10 == 0 else None
        action = ("block" if i % 20 == 0 else "require_kyc") if ring else "throttle"
        flags.append(Flag(acct, t0, 0.95 + (i % 5) / 100, t0, ring_id=ring, action=action, n_events=100 + i % 900))
    members: dict[str, list[str]] = {}
    for f in flags:
        if f.ring_id:
            members.setdefault(f.ring_id, []).append(f.account_id)
    rings = [Ring(r, sorted(m), 0.97, t0, ["shared IP addresses"]) for r, m in members.items()]
    policy, now = DecisionPolicy(), datetime.now(UTC)
    analyst = keys.Principal(0, "bench", "analyst")
    for start in range(0, len(flags), 5000):
        with transaction(sessions) as session:
            record_outcomes([TickOutcome(t0, 0, flags[start : start + 5000], [])], session=session)
    with transaction(sessions) as session:
        record_outcomes([TickOutcome(t0, 0, [], rings)], session=session)
        for acct in ids[::20]:
            set_override(
                acct,
                "throttle",
                actor=analyst,
                reason="bench",
                source="analyst",
                expires_at=now + timedelta(days=1),
                rpm_limit=10,
                session=session,
                policy=policy,
            )
        _, token = keys.create_key("bench-gateway", "platform", session=session)
    engine.dispose()
    return token


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_server(url: str, port: int, *, loop: str, http: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DISTILLGUARD_DATABASE_URL": url,
        "DISTILLGUARD_LOG_LEVEL": "WARNING",
        # the benchmark measures latency, not the rate limiter: one gateway key, a high budget
        "DISTILLGUARD_PLATFORM_RATE_LIMIT_PER_SECOND": "1000000",
        "DISTILLGUARD_PLATFORM_RATE_LIMIT_BURST": "1000000",
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "api.app:create_app",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        loop,
        "--http",
        http,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited with {proc.returncode}")
    proc.terminate()
    raise SystemExit("uvicorn did not come up within 30 s")


class Connection:
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status


async def load(
    port: int, token: str, accounts: list[str], *, rate: float, seconds: float, connections: int
) -> tuple[list[float], list[float], int, float]:
    """Open-loop load; returns (latencies from due time, service times, errors, wall seconds)."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(*await asyncio.open_connection(HOST, port)))
    auth = f"Authorization: Bearer {token}\r\n".encode()
    latencies: list[float] = []
    service: list[float] = []
    errors = 0
    total = int(rate * seconds)
    rng = random.Random(7)

    async def one(due: float, account: str) -> None:
        nonlocal errors
        conn = await pool.get()
        sent = time.perf_counter()
        try:
            request = (f"GET /v1/decisions/{account} HTTP/1.1\r\nHost: {HOST}\r\n").encode() + auth + b"\r\n"
            status = await asyncio.wait_for(conn.get(request), timeout=5)
            if status != 200:
                errors += 1
            done = time.perf_counter()
            latencies.append(done - due)
            service.append(done - sent)
            pool.put_nowait(conn)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            conn.writer.close()
            pool.put_nowait(Connection(*await asyncio.open_connection(HOST, port)))

    tasks = []
    start = time.perf_counter() + 0.05
    hard_stop = start + seconds + 30  # bounded whatever the server does
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.perf_counter() > hard_stop:
            break
        # a third of the lookups are for accounts with no decision (the common case for a gateway)
        account = rng.choice(accounts) if rng.random() < 0.67 else f"clean-{rng.randrange(10**9)}"
        tasks.append(asyncio.create_task(one(due, account)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=max(1.0, hard_stop - time.perf_counter()))
    wall = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().writer.close()
    return latencies, service, errors, wall


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(coro: Any) -> Any:
    """Run the load loop on uvloop when installed (a cheaper client leaves more CPU to the server).

    The client's cyclic GC is off while it runs: its pauses would be counted as server latency.
    """
    gc.collect()
    gc.disable()
    try:
        try:
            import uvloop
        except ModuleNotFoundError:
            return asyncio.run(coro)
        return uvloop.run(coro)
    finally:
        gc.enable()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up at the same rate")
    parser.add_argument("--accounts", type=int, default=20_000, help="flagged accounts seeded")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--database-url", default=None, help="a throw-away database (default: a temporary SQLite file)")
    parser.add_argument("--loop", default="auto", help="uvicorn --loop (auto, asyncio, uvloop)")
    parser.add_argument("--http", default="auto", help="uvicorn --http (auto, h11, httptools)")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="bench-decisions-")
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    t = time.perf_counter()
    token = seed(url, args.accounts)
    print(f"seeded {args.accounts:,} flagged accounts in {time.perf_counter() - t:.1f}s ({url.split(':')[0]})")
    port = free_port()
    server = start_server(url, port, loop=args.loop, http=args.http)
    try:
        accounts = [f"acct-{i:07d}" for i in range(args.accounts)]
        if args.warmup > 0:
            run(load(port, token, accounts, rate=args.rate, seconds=args.warmup, connections=args.connections))
        cpu0 = cpu_seconds(server.pid)
        lat, svc, errors, wall = run(
            load(port, token, accounts, rate=args.rate, seconds=args.seconds, connections=args.connections)
        )
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        tmp.cleanup()
    if not lat:
        raise SystemExit("no successful requests")
    print(
        f"uvicorn loop={args.loop} http={args.http}; {len(lat):,} requests in {wall:.1f}s "
        f"= {len(lat) / wall:,.0f} req/s (target {args.rate:,.0f}); errors {errors}"
    )
    print(
        "latency from due time (ms): "
        + ", ".join(f"p{p:g} {pct(lat, p):.2f}" for p in (50, 90, 99, 99.9))
        + f", max {max(lat) * 1000:.2f}"
    )
    print("server time, send to last byte (ms): " + ", ".join(f"p{p:g} {pct(svc, p):.2f}" for p in (50, 90, 99, 99.9)))
    print(
        f"server CPU: {cpu / max(len(lat), 1) * 1e6:.0f} us per request ({cpu / wall:.0%} of one core); "
        f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    verdict = "meets" if pct(lat, 99) <= 5.0 and not errors else "MISSES"
    print(f"p99 {pct(lat, 99):.2f} ms {verdict} the target of 5 ms")


if __name__ == "__main__":
    main()
