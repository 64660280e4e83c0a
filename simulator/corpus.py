"""The prompt corpus: found at run time (never copied into the repo), or the built-in grammar."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from simulator.builtin_prompts import builtin_prompt_rows

log = logging.getLogger(__name__)

CORPUS_ENV = "DISTILLGUARD_PROMPTS_CORPUS"
CORPUS_RELATIVE = Path("shared/data/prompts/prompts.jsonl.gz")
BUILTIN = "builtin"


@dataclass(frozen=True)
class PromptCorpus:
    """Prompt texts with kind (human|machine|benchmark), task and source, as parallel arrays."""

    texts: list[str]
    kind: np.ndarray
    task: np.ndarray
    source: np.ndarray
    name: str
    digest: str
    _pools: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.texts)

    def pool(
        self,
        kinds: tuple[str, ...] = (),
        tasks: tuple[str, ...] = (),
        sources: tuple[str, ...] = (),
    ) -> np.ndarray:
        """Indices of texts matching every given filter (empty filter = any); cached."""
        key = f"{kinds}|{tasks}|{sources}"
        if key not in self._pools:
            mask = np.ones(len(self.texts), dtype=bool)
            if kinds:
                mask &= np.isin(self.kind, kinds)
            if tasks:
                mask &= np.isin(self.task, tasks)
            if sources:
                mask &= np.isin(self.source, sources)
            self._pools[key] = np.flatnonzero(mask)
        return self._pools[key]

    def pool_or(self, *filters: dict[str, tuple[str, ...]]) -> np.ndarray:
        """The first non-empty pool among the filters, else every text."""
        for f in filters:
            idx = self.pool(**f)
            if idx.size:
                return idx
        return np.arange(len(self.texts))


def find_corpus(explicit: Path | None) -> Path | None:
    """The corpus to use: explicit path, else $DISTILLGUARD_PROMPTS_CORPUS, else search upward."""
    if explicit is not None:
        return explicit if explicit.is_file() else None
    env = os.environ.get(CORPUS_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    for base in (Path.cwd(), Path(__file__).resolve().parent):
        for d in (base, *base.parents):
            candidate = d / CORPUS_RELATIVE
            if candidate.is_file():
                return candidate
    return None


def load_corpus(explicit: Path | None) -> PromptCorpus:
    """Load the real corpus if one is found, else build the built-in one."""
    path = find_corpus(explicit)
    if path is None:
        if explicit is not None:
            log.warning("corpus not found, using built-in prompts", extra={"corpus": str(explicit)})
        else:
            log.info("no corpus found, using built-in prompts")
        rows = builtin_prompt_rows()
        frame = pl.DataFrame(
            rows,
            schema={"text": pl.String, "source": pl.String, "kind": pl.String, "task": pl.String},
        )
        name, digest = BUILTIN, "builtin-v1"
    else:
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()[:16]
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        frame = pl.read_ndjson(
            data,
            schema={"text": pl.String, "source": pl.String, "kind": pl.String, "task": pl.String},
        )
        frame = frame.filter(pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != ""))
        name = path.name
        log.info("corpus loaded", extra={"corpus": str(path), "rows": frame.height})
    frame = frame.with_columns(pl.col("kind", "task", "source").fill_null("unknown"))
    return PromptCorpus(
        texts=frame["text"].to_list(),
        kind=frame["kind"].to_numpy().astype(str),
        task=frame["task"].to_numpy().astype(str),
        source=frame["source"].to_numpy().astype(str),
        name=name,
        digest=digest,
    )
