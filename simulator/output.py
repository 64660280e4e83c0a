"""Materialise the simulated world: sorted events, account events and truth labels, on disk."""

from __future__ import annotations

import gzip
import io
import logging
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from core import schema as s
from simulator import catalog as c
from simulator.world import EventChunk, World
from simulator.wrappers import FAMILIES

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Lines per encoded block: big enough for Polars to vectorise, small enough to overlap with gzip.
_BLOCK = 100_000
# Level 3: nearly the ratio of the default level at about half the CPU (this is a bulk generator).
GZIP_LEVEL = 3
EVENT_COLUMNS = (
    s.EVENT_ID,
    s.TS,
    s.ACCOUNT_ID,
    s.API_KEY_ID,
    s.ORG_ID,
    s.IP,
    s.USER_AGENT,
    s.MODEL,
    s.ENDPOINT,
    s.PROMPT,
    s.SYSTEM_PROMPT_HASH,
    s.PROMPT_TOKENS,
    s.COMPLETION_TOKENS,
    s.STATUS,
    s.LATENCY_MS,
)


def fmt_ts(ms: int) -> str:
    """RFC 3339 UTC with milliseconds and `Z`."""
    dt = _EPOCH + timedelta(milliseconds=int(ms))
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(ms) % 1000:03d}Z"


def to_datetime(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=int(ms))


def _unique_random(rng: np.random.Generator, n: int, high: int) -> np.ndarray:
    """`n` distinct random integers in [0, high), in random order."""
    out = rng.integers(0, high, n, dtype=np.uint64)
    while True:
        _, first = np.unique(out, return_index=True)
        if first.size == n:
            return out
        dup = np.ones(n, bool)
        dup[first] = False
        out[dup] = rng.integers(0, high, int(dup.sum()), dtype=np.uint64)


def _hex_column(values: np.ndarray, nchars: int, prefix: str) -> pl.Series:
    """Fixed-width lowercase hex of unsigned ints, with a prefix (vectorised via one hex dump)."""
    raw = values.astype(">u8").tobytes().hex().encode()
    fixed = np.frombuffer(raw, dtype="S16")
    ser = pl.Series(fixed).cast(pl.String).str.slice(16 - nchars)
    return prefix + ser


@dataclass
class Assembled:
    """The sorted event stream and the facts the truth file needs."""

    events: pl.DataFrame
    ts: np.ndarray
    acct: np.ndarray
    family: np.ndarray
    account_ids: list[str]
    present: np.ndarray


def assemble(world: World) -> Assembled:
    """Concatenate all populations, sort by time, give opaque ids, materialise string columns."""
    ev = EventChunk.concat(world.chunks)
    n_acct = len(world.accounts)
    rng = world.rng("ids")
    acct_rand = _unique_random(rng, n_acct, 1 << 48)
    account_ids = _hex_column(acct_rand, 12, "acct_")
    # Ties in time are broken by the opaque account id, never by generation order (it leaks labels).
    order = np.lexsort((np.arange(len(ev)), acct_rand[ev.acct], ev.ts))
    ev = ev.take(order)
    n = len(ev)
    event_ids = _hex_column(_unique_random(rng, n, 1 << 64), 16, "evt_")

    table = pl.Series("t", world.corpus.texts + world.extra_prompts, dtype=pl.String)
    family_of_prompt = np.r_[np.full(len(world.corpus), -1, np.int64), np.array(world.extra_family, np.int64)]
    pre = pl.Series([a for a, _ in c.AFFIXES], dtype=pl.String)
    suf = pl.Series([b for _, b in c.AFFIXES], dtype=pl.String)
    orgs = pl.Series([a.org_id for a in world.accounts], dtype=pl.String)
    sph_table = pl.Series(world.sphs.values or [""], dtype=pl.String)
    sph_idx = pl.Series(np.where(ev.sph >= 0, ev.sph, 0))

    acct_s = pl.Series(ev.acct)
    frame = pl.DataFrame(
        {
            s.EVENT_ID: event_ids,
            s.TS: pl.from_epoch(pl.Series(ev.ts), time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
            s.ACCOUNT_ID: account_ids.gather(acct_s),
            s.API_KEY_ID: pl.Series(world.keys.values, dtype=pl.String).gather(pl.Series(ev.key)),
            s.ORG_ID: orgs.gather(acct_s),
            s.IP: pl.Series(world.ips.values, dtype=pl.String).gather(pl.Series(ev.ip)),
            s.USER_AGENT: pl.Series(world.uas.values, dtype=pl.String).gather(pl.Series(ev.ua)),
            s.MODEL: pl.Series(list(c.MODELS), dtype=pl.String).gather(pl.Series(ev.model)),
            s.ENDPOINT: pl.Series(list(c.ENDPOINTS), dtype=pl.String).gather(pl.Series(ev.endpoint)),
            "_text": table.gather(pl.Series(ev.prompt)),
            "_pre": pre.gather(pl.Series(ev.affix)),
            "_suf": suf.gather(pl.Series(ev.affix)),
            "_lower": pl.Series(ev.lower),
            s.SYSTEM_PROMPT_HASH: sph_table.gather(sph_idx),
            "_has_sph": pl.Series(ev.sph >= 0),
            "_sys_tokens": pl.Series(ev.sys_tokens),
            s.COMPLETION_TOKENS: pl.Series(ev.completion_tokens),
            s.STATUS: pl.Series(ev.status),
            s.LATENCY_MS: pl.Series(ev.latency_ms),
        }
    )
    text = pl.when(pl.col("_lower")).then(pl.col("_text").str.to_lowercase()).otherwise(pl.col("_text"))
    frame = (
        frame.with_columns(
            pl.concat_str([pl.col("_pre"), text, pl.col("_suf")]).alias(s.PROMPT),
            pl.when(pl.col("_has_sph")).then(pl.col(s.SYSTEM_PROMPT_HASH)).otherwise(None).alias(s.SYSTEM_PROMPT_HASH),
        )
        .with_columns(
            # About four characters per token, plus the system prompt the app sends.
            ((pl.col(s.PROMPT).str.len_chars() + 3) // 4 + pl.col("_sys_tokens")).cast(pl.Int64).alias(s.PROMPT_TOKENS),
        )
        .select(EVENT_COLUMNS)
    )
    return Assembled(
        events=frame,
        ts=ev.ts,
        acct=ev.acct,
        family=family_of_prompt[ev.prompt],
        account_ids=account_ids.to_list(),
        present=np.unique(ev.acct),
    )


def encode_event_lines(frame: pl.DataFrame) -> bytes:
    """NDJSON of an event block; an absent system_prompt_hash is omitted, not written as null."""
    buf = io.BytesIO()
    frame.write_ndjson(buf)
    # `,"system_prompt_hash":null` cannot occur inside a JSON string (its quotes would be escaped),
    # so a literal replace touches only the real key.
    return buf.getvalue().replace(f',"{s.SYSTEM_PROMPT_HASH}":null'.encode(), b"")


def _deflate(data: bytes, last: bool) -> bytes:
    """One raw-deflate piece; non-final pieces end byte-aligned (sync flush) to concatenate."""
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def write_gzip_lines(
    path: Path,
    frame: pl.DataFrame,
    encode: Callable[[pl.DataFrame], bytes],
    progress: Callable[[float], None] | None = None,
) -> None:
    """Write `frame` as one gzip member of NDJSON, compressing blocks in parallel (as pigz does).

    Blocks are fixed by row count, so the bytes depend only on the data: deterministic.
    """
    tmp = path.with_name(path.name + ".tmp")
    starts = list(range(0, max(frame.height, 1), _BLOCK))
    crc, size = 0, 0
    # zlib releases the GIL: two compressors run on both cores while Polars encodes the next block.
    with tmp.open("wb") as fh, ThreadPoolExecutor(max_workers=2) as pool:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # gzip header: no name, mtime 0
        pending: list[Future[bytes]] = []
        for k, i in enumerate(starts):
            data = encode(frame.slice(i, _BLOCK))
            crc = zlib.crc32(data, crc)
            size += len(data)
            pending.append(pool.submit(_deflate, data, k == len(starts) - 1))
            while len(pending) > 2:
                fh.write(pending.pop(0).result())
            if progress is not None:
                progress((k + 1) / len(starts))
        for fut in pending:
            fh.write(fut.result())
        fh.write(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    tmp.replace(path)


def write_bytes_gzip(path: Path, data: bytes) -> None:
    """Write bytes as a deterministic gzip file (no name, zero mtime)."""
    tmp = path.with_name(path.name + ".tmp")
    with (
        tmp.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=GZIP_LEVEL) as gz,
    ):
        gz.write(data)
    tmp.replace(path)


def account_event_lines(world: World, asm: Assembled) -> bytes:
    """Account events (CONTRACT.md section 2) of the accounts that made requests, sorted by time."""
    present = set(asm.present.tolist())
    ids = asm.account_ids
    rows: list[tuple[int, str, int, dict[str, Any]]] = []
    for i, a in enumerate(world.accounts):
        if i not in present:
            continue
        rows.append(
            (
                a.signup_ms,
                ids[i],
                0,
                {
                    s.ACCOUNT_ID: ids[i],
                    s.TS: fmt_ts(a.signup_ms),
                    s.TYPE: "signup",
                    s.EMAIL_DOMAIN: a.email_domain,
                    s.EMAIL_LOCAL_SHAPE: a.email_shape,
                    s.SIGNUP_IP: a.signup_ip,
                    s.COUNTRY: a.country,
                    s.KYC_STATUS: "none",
                    s.ORG_ID: a.org_id,
                    s.PLAN: a.plan,
                },
            )
        )
        if a.payment_fp is not None and a.payment_ms is not None and a.payment_ms < world.end_ms:
            rows.append(
                (
                    a.payment_ms,
                    ids[i],
                    1,
                    {
                        s.ACCOUNT_ID: ids[i],
                        s.TS: fmt_ts(a.payment_ms),
                        s.TYPE: "payment_added",
                        s.PAYMENT_FINGERPRINT: a.payment_fp,
                    },
                )
            )
        if a.kyc_ms is not None and a.kyc_ms < world.end_ms:
            rows.append(
                (
                    a.kyc_ms,
                    ids[i],
                    2,
                    {
                        s.ACCOUNT_ID: ids[i],
                        s.TS: fmt_ts(a.kyc_ms),
                        s.TYPE: "kyc_update",
                        s.KYC_STATUS: a.kyc,
                    },
                )
            )
    for acct, ts, kind, fields in world.account_events:
        if acct in present and ts < world.end_ms:
            rows.append(
                (
                    ts,
                    ids[acct],
                    3,
                    {s.ACCOUNT_ID: ids[acct], s.TS: fmt_ts(ts), s.TYPE: kind, **fields},
                )
            )
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return b"".join(orjson.dumps(r[3], option=orjson.OPT_APPEND_NEWLINE) for r in rows)


def truth_document(world: World, asm: Assembled, params: dict[str, Any]) -> dict[str, Any]:
    """The labels (distillguard.truth/v1): account labels and groups, campaigns, look-alikes."""
    ids = asm.account_ids
    accounts = {
        ids[i]: {"label": world.accounts[i].label, "group": world.accounts[i].group} for i in asm.present.tolist()
    }
    per_acct = np.bincount(asm.acct, minlength=len(world.accounts))
    campaigns: list[dict[str, Any]] = []
    lookalikes: list[dict[str, Any]] = []
    for gid in sorted(world.groups):
        g = world.groups[gid]
        members = np.array([m for m in g["accounts"].tolist() if per_acct[m] > 0], dtype=np.int64)
        if members.size == 0:
            # Only in very short windows: a group that never got to act is not in the truth.
            log.warning("group without events left out of the truth", extra={"group": gid})
            continue
        in_group = np.isin(asm.acct, members)
        doc: dict[str, Any] = {}
        member_ids = sorted(ids[m] for m in members.tolist())
        n_events = int(in_group.sum())
        if g["type"] == "campaign":
            fam = asm.family[in_group]
            ts = asm.ts[in_group]
            harvest = fam >= 0
            counts = np.bincount(fam[harvest], minlength=len(FAMILIES))
            total = max(int(counts.sum()), 1)
            doc = {
                "campaign_id": gid,
                "style": g["style"],
                "start_ts": fmt_ts(int(ts[harvest].min())) if harvest.any() else None,
                "planned_start_ts": fmt_ts(g["planned_start_ms"]),
                "end_ts": fmt_ts(int(ts.max())) if ts.size else None,
                "accounts": member_ids,
                "n_accounts": len(member_ids),
                "n_events": n_events,
                "n_extraction_events": int(harvest.sum()),
                "capabilities": {
                    f: round(int(k) / total, 3) for f, k in zip(FAMILIES, counts.tolist(), strict=True) if k
                },
            }
            if "operator_tz" in g:
                doc["operator_utc_offset_h"] = g["operator_tz"]
            campaigns.append(doc)
        else:
            doc = {
                "group_id": gid,
                "kind": g["kind"],
                "accounts": member_ids,
                "n_accounts": len(member_ids),
                "n_events": n_events,
            }
            for k, v in g.items():
                if k not in ("type", "kind", "accounts"):
                    if k.endswith("_ms"):
                        doc[k[:-3] + "_ts"] = fmt_ts(v)
                    else:
                        doc[k] = v
            lookalikes.append(doc)
    return {
        "schema": s.TRUTH_SCHEMA_ID,
        "seed": world.seed,
        "start_ts": fmt_ts(world.start_ms),
        "end_ts": fmt_ts(world.end_ms),
        "n_events": int(asm.ts.size),
        "params": params,
        "accounts": dict(sorted(accounts.items())),
        "campaigns": campaigns,
        "lookalikes": lookalikes,
    }


def write_parquet(path: Path, frame: pl.DataFrame) -> None:
    """The events as Parquet, typed per the contract (ts as a UTC datetime)."""
    typed = frame.with_columns(pl.col(s.TS).str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_unit="ms", time_zone="UTC"))
    typed.write_parquet(path, compression="zstd", statistics=True)
