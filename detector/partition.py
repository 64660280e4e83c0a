"""The per-event stage of detection: the work of whoever owns a partition of the accounts.

Events are deduplicated, assigned to event-time ticks and reduced, per (account, tick), to
`TickPartials`: volume aggregates, distinct values, template and wrapper-key counts of a sample of
the prompts and the phrase keys of its targeted ones, text hashes — rows per active account, not
per event. The ring stage
(detector/engine.py `DetectionEngine`) merges them into the population's state, scores and links.
Requests are partitioned by account (Kafka keys them by account_id), so an account's partials come
from one partition, and the partitions' partials of one tick merge by concatenation
(`TickPartials.merge`); `to_ipc` / `from_ipc` carry them between processes. In one process
(replay, demo, one consume worker) the engine drives one `PartitionStage` itself.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, cast

import numpy as np
import polars as pl

from core import schema as s
from detector.state import KEY_BITS, compact, fold_key
from features import clusters as cl
from features import prompts as pr
from features import volume as v

if TYPE_CHECKING:
    from detector.engine import DetectorConfig

# per-tick plans are small and many: the in-memory engine starts faster than the streaming one
POLARS_ENGINE: Final = "in-memory"
# a template-count key: the template id's top bits, then the capability's code in the low bits
CODE = "capability_code"
KEY = "_key"
# the tick an event is processed at, while several ticks' events are prepared in one pass
TICK = "_tick"
# a sampled prompt's row in its tick's `TickPartials.prompts`: where a wrapper key's example text is
ROW = "_row"
# how often an account's text was answered successfully in a tick (TextNovelty)
OK = "_ok"
# the hash of the text a phrase key was seen in (`TickPartials.phrases`)
TEXT = "_text"
# the customer a text's sender belongs to: its organisation, else the account itself (TextNovelty's public rule)
CUSTOMER = "_customer"
CODE_BITS = 3
CAPABILITY_CODES = pl.DataFrame(
    {pr.CAPABILITY: list(pr.CAPABILITIES), CODE: pl.Series(range(len(pr.CAPABILITIES)), dtype=pl.UInt64)}
)
assert len(pr.CAPABILITIES) <= 1 << CODE_BITS and KEY_BITS > 2 * CODE_BITS


def _text_key(text: pl.Expr) -> pl.Expr:
    """A prompt text's 64-bit hash (TextNovelty keys: `fold_key` of it)."""
    return text.hash(seed=29)


def text_keys(texts: pl.Series) -> np.ndarray:
    """`_text_key` of each of `texts`, as the partials hash a tick's prompts."""
    return pl.select(_text_key(pl.lit(texts))).to_series().to_numpy()


_FRAMES = ("volume", "distinct", "templates", "keys", "texts", "prompts", "phrases")


@dataclass(frozen=True)
class TickPartials:
    """One tick's events (of one partition, or merged) reduced to rows per active account."""

    tick: datetime
    n_events: int
    # the accounts with events in the tick
    active: pl.Series
    volume: pl.DataFrame
    distinct: pl.DataFrame
    # (account_id, _KEY: template id and capability code, n)
    templates: pl.DataFrame
    # (account_id, _KEY: wrapper key, key_count, _ROW: the first sampled prompt using it)
    keys: pl.DataFrame
    # (account_id, _KEY: the text's hash, _OK: answered successfully, _CUSTOMER: its org) per distinct text
    texts: pl.DataFrame
    # (ts, event_id, prompt) of the tick's sampled prompts in event order: keys' _ROW points here
    prompts: pl.DataFrame
    # (account_id, _KEY: phrase hash, _TEXT: the text's hash) per phrase of a sampled targeted text
    phrases: pl.DataFrame

    @staticmethod
    def merge(parts: Sequence[TickPartials]) -> TickPartials:
        """The partials of disjoint partitions for one tick as one partition would have given them.

        Prompts are put back in event order (ts, event_id) and the keys' rows renumbered, so a key's
        example is its earliest sampled prompt whichever partition sent it.
        """
        if len(parts) == 1:
            return parts[0]
        ticks = {p.tick for p in parts}
        if len(ticks) != 1:
            raise ValueError(f"partials of several ticks cannot merge: {sorted(ticks)}")
        offsets = np.cumsum([0] + [p.prompts.height for p in parts[:-1]])
        prompts = pl.concat([p.prompts for p in parts])
        order = prompts.select(pl.arg_sort_by(s.TS, s.EVENT_ID)).to_series().to_numpy()
        new_row = np.empty(order.size, dtype=np.int64)
        new_row[order] = np.arange(order.size)
        keys = pl.concat([p.keys.with_columns(pl.col(ROW) + int(off)) for p, off in zip(parts, offsets, strict=True)])
        return TickPartials(
            tick=parts[0].tick,
            n_events=sum(p.n_events for p in parts),
            active=pl.concat([p.active for p in parts]),
            volume=pl.concat([p.volume for p in parts]),
            distinct=pl.concat([p.distinct for p in parts]),
            templates=pl.concat([p.templates for p in parts]),
            keys=keys.with_columns(pl.Series(ROW, new_row[keys.get_column(ROW).to_numpy()], dtype=keys.schema[ROW])),
            texts=pl.concat([p.texts for p in parts]),
            prompts=prompts[order],
            phrases=pl.concat([p.phrases for p in parts]),
        )

    def to_ipc(self) -> bytes:
        """The partials as one Arrow IPC stream (a message between the stages)."""
        frames = [getattr(self, name) for name in _FRAMES]
        head = pl.DataFrame({"tick": [self.tick], "n_events": [self.n_events]})
        buf = io.BytesIO()
        for frame in (head, pl.DataFrame({s.ACCOUNT_ID: self.active}), *frames):
            body = io.BytesIO()
            frame.write_ipc(body)
            data = body.getvalue()
            buf.write(len(data).to_bytes(8, "little"))
            buf.write(data)
        return buf.getvalue()

    @classmethod
    def from_ipc(cls, data: bytes) -> TickPartials:
        """Partials written by `to_ipc`."""
        frames: list[pl.DataFrame] = []
        at = 0
        while at < len(data):
            size = int.from_bytes(data[at : at + 8], "little")
            frames.append(pl.read_ipc(io.BytesIO(data[at + 8 : at + 8 + size])))
            at += 8 + size
        head, active, *rest = frames
        named = dict(zip(_FRAMES, rest, strict=True))
        return cls(
            tick=head.get_column("tick").item(),
            n_events=int(head.get_column("n_events").item()),
            active=active.get_column(s.ACCOUNT_ID),
            **named,
        )


class PartitionStage:
    """Dedupes a partition's events, closes event-time ticks and reduces each to `TickPartials`.

    Holds only what the per-event work needs: events of ticks not closed yet, the event ids seen
    within the dedupe horizon, and each account's latest event time (the first gap of a tick is
    measured from it).
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._step = v.duration_of(config.every)
        self.buffer = pl.DataFrame(schema=s.EVENT_SCHEMA)
        self.last_seen = pl.DataFrame(schema={s.ACCOUNT_ID: pl.String, v.LAST_TS: s.TS_DTYPE})
        self.seen_ids = pl.DataFrame(schema={s.EVENT_ID: pl.String, s.TS: s.TS_DTYPE})
        self.duplicates = 0
        self.next_tick: datetime | None = None
        self.last_tick: datetime | None = None
        self.first_ts: datetime | None = None
        self.last_ts: datetime | None = None

    def ingest(self, events: pl.DataFrame, *, watermark: datetime | None = None) -> list[TickPartials]:
        """Buffer validated events and close every tick the watermark has passed.

        The watermark is the event time up to which the input is complete. A single ordered
        file's is its latest event (the default); a multi-partition stream passes the minimum
        over its partitions' latest events, so a lagging partition's events are never late.
        """
        if events.height:
            events = self._drop_duplicates(events)
        if events.height:
            self.buffer = pl.concat([self.buffer, events.select(list(s.EVENT_SCHEMA))])
            lo, hi = cast(datetime, events.get_column(s.TS).min()), cast(datetime, events.get_column(s.TS).max())
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        if self.last_ts is None:
            return []
        return self._close_due(self.last_ts if watermark is None else watermark)

    def flush(self) -> list[TickPartials]:
        """End of stream: close the ticks of the remaining buffered events."""
        partials = self._close_due(None)
        self.next_tick = None
        return partials

    def advance(self, tick: datetime) -> None:
        """The ring stage ran `tick` (with other partitions' partials): a late event here goes after it."""
        if self.last_tick is None or tick > self.last_tick:
            self.last_tick = tick
            self.next_tick = self._next_tick()

    def _drop_duplicates(self, events: pl.DataFrame) -> pl.DataFrame:
        """Keep the first sighting of each event_id (the contract's idempotency key)."""
        n = events.height
        events = events.unique(subset=s.EVENT_ID, keep="first", maintain_order=True)
        if self.seen_ids.height:
            events = events.join(self.seen_ids, on=s.EVENT_ID, how="anti")
        self.duplicates += n - events.height
        self.seen_ids = compact(pl.concat([self.seen_ids, events.select(s.EVENT_ID, s.TS)]))
        return events

    def _boundary_after(self, ts: datetime) -> datetime:
        """The first tick boundary strictly after `ts` (ticks are multiples of `every`)."""
        return pl.Series([ts]).dt.truncate(self.config.every).item() + self._step

    def _next_tick(self) -> datetime | None:
        if not self.buffer.height:
            return None
        boundary = self._boundary_after(cast(datetime, self.buffer.get_column(s.TS).min()))
        # late events (before the last tick) are taken at the next tick, never at a past one
        return boundary if self.last_tick is None else max(boundary, self.last_tick + self._step)

    def _close_due(self, watermark: datetime | None) -> list[TickPartials]:
        """Partials of every tick up to `watermark` (all buffered events when None), in event-time order.

        Each buffered event belongs to the first tick boundary after it, or to the next tick to
        close if that boundary has passed (a late event). All those ticks are reduced in one pass,
        exactly as each tick alone would be.
        """
        first = self._next_tick()
        if first is None or (watermark is not None and first > watermark):
            self.next_tick = first
            return []
        boundary = pl.col(s.TS).dt.truncate(self.config.every) + self._step
        tagged = self.buffer.with_columns(
            pl.when(boundary < first).then(pl.lit(first, dtype=s.TS_DTYPE)).otherwise(boundary).alias(TICK)
        )
        is_due = pl.lit(True) if watermark is None else pl.col(TICK) <= watermark
        due = tagged.filter(is_due).sort(TICK, s.TS, s.EVENT_ID)
        self.buffer = tagged.filter(~is_due).drop(TICK)
        partials = self._prepare(due)
        last = partials[-1].tick
        self.last_tick = last if self.last_tick is None else max(self.last_tick, last)
        # what a redelivery within the horizon of the last tick closed can still repeat
        self.seen_ids = self.seen_ids.filter(pl.col(s.TS) >= last - self.config.dedupe_horizon)
        seen = due.select(s.ACCOUNT_ID, pl.col(s.TS).alias(v.LAST_TS))
        # a late event is no account's latest: the max, not the pass's own
        self.last_seen = pl.concat([self.last_seen, seen]).group_by(s.ACCOUNT_ID).agg(pl.col(v.LAST_TS).max())
        self.next_tick = self._next_tick()
        return partials

    def _prepare(self, due: pl.DataFrame) -> list[TickPartials]:
        """Reduce several ticks' events (tagged with TICK, in (tick, ts, event_id) order) to per-tick partials.

        Volume partials, distinct values, and the template and wrapper-key counts (and phrase keys)
        of a per-account sample of each tick's prompts, exactly as each tick alone would give them.
        """
        lf = due.lazy()
        by = [s.ACCOUNT_ID, TICK]
        accounts = due.get_column(s.ACCOUNT_ID).unique().implode()
        last_seen = self.last_seen.lazy().filter(pl.col(s.ACCOUNT_ID).is_in(accounts))
        volume = v.volume_partials(lf, last_seen, every=self.config.every, group_by=TICK)
        distinct = v.distinct_partials(lf, group_by=TICK)
        fp = pr.prompt_fingerprints(
            cl.prompt_sample(lf, per_account=self.config.prompt_sample_per_tick, group_by=by),
            keys=True,
            wrapper_keys_only=True,
            # shingling is a quarter of the per-event cost: not paid when the phrase rule is off
            phrases=self.config.early_onset_phrases is not None,
        ).with_row_index(ROW)
        templates = pr.template_counts(fp, group_by=by).join(CAPABILITY_CODES.lazy(), on=pr.CAPABILITY)
        keys = cl.template_key_counts(fp, group_by=by, first_row=ROW)
        texts = (
            lf.filter(pl.col(s.PROMPT).is_not_null())
            .group_by(*by, _text_key(pl.col(s.PROMPT)).alias(KEY))
            .agg(
                (pl.col(s.STATUS).fill_null(200) < 400).sum().cast(pl.Int64).alias(OK),
                # the sender's organisation (the lowest id seen, whatever the order; see _note_texts)
                pl.col(s.ORG_ID).min().alias(CUSTOMER),
            )
        )
        if self.config.early_onset_phrases is None:
            phrases = pl.LazyFrame(schema={s.ACCOUNT_ID: pl.String, TICK: s.TS_DTYPE, KEY: pl.UInt64, TEXT: pl.UInt64})
        else:
            phrases = (
                fp.select(*by, pl.col(pr.PHRASE_KEYS).alias(KEY), _text_key(pl.col(s.PROMPT)).alias(TEXT))
                .explode(KEY)
                .drop_nulls(KEY)
            )
        # the fingerprinting is one shared subplan of these queries (collect_all caches it), so the
        # prompt texts and the rows the key counts point at come from the same evaluation
        volume_df, distinct_df, templates_df, keys_df, prompts_df, texts_df, phrases_df = pl.collect_all(
            [volume, distinct, templates, keys, fp.select(TICK, s.TS, s.EVENT_ID, s.PROMPT), texts, phrases],
            engine=POLARS_ENGINE,
        )
        tid = fold_key(templates_df.get_column(pr.TEMPLATE_ID).to_numpy())
        code = templates_df.get_column(CODE).to_numpy().astype(np.uint64)
        templates_df = templates_df.select(
            *by, pl.Series(KEY, (tid >> np.uint64(CODE_BITS) << np.uint64(CODE_BITS)) | code), pr.N
        )
        # the sample is in (tick, ts, event_id) order: a tick's prompts are one run of rows, and a
        # key's row counts from the start of its tick's run
        starts = prompts_df.with_row_index(ROW).group_by(TICK).agg(pl.col(ROW).min().alias("_start"))
        keys_df = keys_df.join(starts, on=TICK, how="left").select(
            *by,
            pl.Series(KEY, fold_key(keys_df.get_column(cl.TEMPLATE_KEY).to_numpy())),
            cl.KEY_COUNT,
            (pl.col(ROW) - pl.col("_start")).cast(pl.Int64).alias(ROW),
        )

        def per_tick(df: pl.DataFrame) -> Callable[[datetime], pl.DataFrame]:
            parts = {k: part.drop(TICK) for (k,), part in df.partition_by(TICK, as_dict=True).items()}
            empty = df.clear().drop(TICK)
            return lambda tick: parts.get(tick, empty)

        volume_of, distinct_of, templates_of, keys_of, texts_of, prompts_of, phrases_of = (
            per_tick(df) for df in (volume_df, distinct_df, templates_df, keys_df, texts_df, prompts_df, phrases_df)
        )
        return [
            TickPartials(
                tick=tick,
                n_events=events.height,
                active=events.get_column(s.ACCOUNT_ID).unique(),
                volume=volume_of(tick),
                distinct=distinct_of(tick),
                templates=templates_of(tick),
                keys=keys_of(tick),
                texts=texts_of(tick),
                prompts=prompts_of(tick),
                phrases=phrases_of(tick),
            )
            for (tick,), events in due.partition_by(TICK, as_dict=True, maintain_order=True).items()
        ]
