"""Write the prompt corpus's public benchmark items as JSON lines, for `DISTILLGUARD_PUBLIC_TEXTS`.

    python bench/public_texts.py OUT.jsonl [--corpus PATH]

A platform knows the public benchmarks' items (gsm8k, humaneval, math500, mbpp ...) verbatim: the
detector's public rule (DetectorConfig.public_texts) counts them known from the start, as if other
labs had run them before the stream began. The corpus is the simulator's (its `benchmark` kind), and
the built-in corpus's (seeds simulated without a corpus).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    from simulator.builtin_prompts import builtin_prompt_rows
    from simulator.corpus import load_corpus

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args()
    import polars as pl

    corpus = load_corpus(args.corpus)
    texts = [t for t, k in zip(corpus.texts, corpus.kind.tolist(), strict=True) if k == "benchmark"]
    # and the built-in corpus's benchmarks: seeds simulated where no corpus was found use those
    texts += [row["text"] for row in builtin_prompt_rows() if row["kind"] == "benchmark"]
    texts = sorted(set(texts))
    pl.DataFrame({"text": texts}).write_ndjson(args.out)
    print(f"{len(texts)} public benchmark texts from {corpus.name} and the built-in corpus -> {args.out}")


if __name__ == "__main__":
    main()
