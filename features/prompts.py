# ruff: noqa: RUF001  (homoglyph tables: look-alike characters are the point)
"""Prompt-pattern fingerprints and capability targeting, as mergeable per-account aggregates.

Per event (`prompt_fingerprints`):
  * ``template_id`` (UInt64): fingerprint of the prompt's *wrapper* — the part a ring's accounts share
    ("Think step by step and show your reasoning: {question}") — robust to the content, to typos,
    homoglyphs, case/whitespace noise and to light rewording. Null for null, empty or word-less prompts.
  * ``template_keys`` (List[UInt64], optional): LSH band keys of both ends of the prompt, for a linking
    graph that wants paraphrase-level recall (two prompts are candidates when they share any key).
  * ``capability``: which capability the prompt targets (reasoning / coding / agentic / rubric_grading /
    other), by case-insensitive regexes over the normalised text.

Both are pure functions of the prompt text alone (no batch statistics, no clustering, no clock, own
hashing), so a prompt gets the same id in any batch, any process and any replay. They are computed once
per *distinct* prompt text of a batch (unique -> hash -> join back).

How the template fingerprint is built (measured in tests/features/test_prompts.py on wrapper families over
real corpus questions):
  1. `normalised_prompt`: NFKC, confusables -> Latin, lowercase, code blocks / URLs / e-mails / hex ids
     masked, numbers -> 0, whitespace collapsed (newlines kept as segment boundaries). Long prompts are
     cut to their first and last PROMPT_END_CHARS characters first: wrappers sit at the ends.
  2. Skeleton. A wrapper sits at the start or the end and is set off from the content by a colon, a
     newline or a sentence end, so the prompt is split at those into segments and its first and last
     segment are the two candidate wrappers ("sides"). Measured alternatives: the first+last N words
     (the brief's first idea) keeps content on the side without the wrapper and caps same-wrapper
     agreement near 0.3 Jaccard; growing the sides over further instruction-like segments drags content
     in too (0.87 vs 0.94 without noise). Of the two sides the more instruction-like one — count of
     prompt-vocabulary words minus content words, see features/prompt_lexicon.py — is the template.
  3. Tokens of a side are canonicalised: words of the prompt vocabulary map to their concept ("reply",
     "respond", "answer" -> one id) and within one edit of it (symmetric-delete spelling correction), so
     typos and synonyms keep the id; other words are stemmed; stop words dropped. Word sets rather than
     character shingles: char 3-grams raise unrelated-prompt similarity 5x for no recall gain once words
     are typo-corrected, and sets (not n-grams) survive reordered paraphrases.
  4. MinHash (32 values) of the side's token set; ``template_id`` = hash of the first 4 values and of the
     set's size class, so two prompts share it with probability ~J^4. Measured: a min over band keys
     loses recall on both same-wrapper and paraphrase pairs; 2 rows looked fine per pair (0.05% of
     unrelated human pairs) but over 19k human prompts it pooled 44% of them into shared ids (tiny
     all-vocabulary skeletons like "give me" / "reply with one word"); 4 rows + size class: 0.0045% of
     pairs, 11%, most of which are real shared templates of that corpus. The cost is paraphrase recall
     of the single id; ``template_keys`` (8 bands x 4 rows of *each* side) keep paraphrase-level and
     wrong-end-picked matches for the linking graph.

Streaming contract (exact merge across batches):
  `template_counts(events)` reduces a batch to partials: one row per (account_id, template_id,
  capability) with count ``n``; events without a template id (no prompt) are dropped. Partials of any
  split of the events, concatenated and passed to `merge_template_counts` (a group-by sum), equal the
  partials of a single pass. The finalisers `template_share`, `template_spread`,
  `account_template_spread` and `capability_mix` take partials (an events frame is turned into partials
  first) and depend on them only through those sums, so they give exactly the single-pass result.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from core import schema as s
from features import _minhash

TEMPLATE_VERSION = 1  # bump when normalisation, lexicon or hashing constants change (ids change)
PROMPT_END_CHARS = 512  # characters kept from each end of a long prompt

# Per-event columns.
TEMPLATE_ID = "template_id"
TEMPLATE_KEYS = "template_keys"
CAPABILITY = "capability"
PHRASE_KEYS = "phrase_keys"

# Phrases are word shingles of clauses (text between punctuation or line breaks) of this many words:
# a wrapper's sentences ("you are a strict grader"), not a lone word or a whole paragraph
PHRASE_MIN_WORDS = 3
PHRASE_MAX_WORDS = 16
PHRASE_WORDS = 4

# Capabilities (values of CAPABILITY), in match priority order, then the fallback.
REASONING = "reasoning"
CODING = "coding"
AGENTIC = "agentic"
RUBRIC_GRADING = "rubric_grading"
OTHER = "other"
CAPABILITIES = (REASONING, CODING, AGENTIC, RUBRIC_GRADING, OTHER)

# Partials (streaming state) column.
N = "n"
TEMPLATE_COUNTS_SCHEMA: dict[str, pl.DataType] = {
    s.ACCOUNT_ID: pl.String(),
    TEMPLATE_ID: pl.UInt64(),
    CAPABILITY: pl.String(),
    N: pl.Int64(),
}

# Per-account template features.
N_PROMPTS = "n_prompts"
N_TEMPLATES = "n_templates"
TOP_TEMPLATE_ID = "top_template_id"
TOP_TEMPLATE_SHARE = "top_template_share"
TEMPLATE_ENTROPY = "template_entropy"
# Per-template spread.
N_ACCOUNTS = "n_accounts"
N_EVENTS = "n_events"
EVENTS_PER_ACCOUNT = "events_per_account"
# Per-account spread.
SHARED_TEMPLATE_ACCOUNTS = "shared_template_accounts"
SHARED_TEMPLATE_ID = "shared_template_id"
SHARED_TEMPLATE_EVENTS_PER_ACCOUNT = "shared_template_events_per_account"
# Per-account capability mix.
CAP_SHARE_COLS = {c: f"cap_{c}_share" for c in CAPABILITIES}
CAP_REASONING_SHARE = CAP_SHARE_COLS[REASONING]
CAP_CODING_SHARE = CAP_SHARE_COLS[CODING]
CAP_AGENTIC_SHARE = CAP_SHARE_COLS[AGENTIC]
CAP_RUBRIC_GRADING_SHARE = CAP_SHARE_COLS[RUBRIC_GRADING]
CAP_OTHER_SHARE = CAP_SHARE_COLS[OTHER]
TARGETED_SHARE = "targeted_share"

_NORM = "__prompt_norm"

# Homoglyphs NFKC leaves alone (Cyrillic / Greek / Latin look-alikes), typographic quotes and dashes,
# and invisible characters used to split words. Fullwidth forms and math alphanumerics are NFKC's job.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a",
    "в": "b",
    "е": "e",
    "ё": "e",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "ѕ": "s",
    "ԁ": "d",
    "һ": "h",
    "ԛ": "q",
    "ԝ": "w",
    "ӏ": "l",
    "А": "A",
    "В": "B",
    "Е": "E",
    "К": "K",
    "М": "M",
    "Н": "H",
    "О": "O",
    "Р": "P",
    "С": "C",
    "Т": "T",
    "Х": "X",
    "У": "Y",
    "І": "I",
    "Ј": "J",
    "Ѕ": "S",
    "Ԁ": "D",
    "Һ": "H",
    "Ԛ": "Q",
    "Ԝ": "W",
    # Greek
    "α": "a",
    "ο": "o",
    "ν": "v",
    "ρ": "p",
    "ι": "i",
    "κ": "k",
    "υ": "u",
    "χ": "x",
    "τ": "t",
    "ε": "e",
    "Α": "A",
    "Β": "B",
    "Ε": "E",
    "Ζ": "Z",
    "Η": "H",
    "Ι": "I",
    "Κ": "K",
    "Μ": "M",
    "Ν": "N",
    "Ο": "O",
    "Ρ": "P",
    "Τ": "T",
    "Υ": "Y",
    "Χ": "X",
    # Armenian / IPA / Latin look-alikes
    "ո": "n",
    "ս": "u",
    "ɡ": "g",
    "ı": "i",
    "ȷ": "j",
    "ɑ": "a",
    "ǀ": "l",
    # quotes, primes, dashes
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2015": "-",
    "\u2212": "-",
    # zero-width and other invisible format characters
    "\u200b": "",
    "\u200c": "",
    "\u200d": "",
    "\u2060": "",
    "\ufeff": "",
    "\u00ad": "",
    "\u180e": "",
}

CODE_PLACEHOLDER = "<code>"
URL_PLACEHOLDER = "<url>"
EMAIL_PLACEHOLDER = "<email>"
HEX_PLACEHOLDER = "<hex>"


def _compatibility_forms(prompts: pl.Series) -> pl.Series:
    """NFKC, then confusables -> Latin, applied only to prompts with non-ASCII characters.

    ASCII text is already in both forms, and most prompts are ASCII: normalising only the rest
    cuts the cost of this step about five-fold (NFKC alone was ~45% of normalisation)."""
    non_ascii = prompts.str.contains(r"[^\x00-\x7f]")
    idx = non_ascii.arg_true()
    if idx.len() == 0:
        return prompts
    fixed = prompts.filter(non_ascii).str.normalize("NFKC").str.replace_many(CONFUSABLES)
    return prompts.clone().scatter(idx, fixed)


def normalised_prompt(expr: pl.Expr) -> pl.Expr:
    """Canonical text of a prompt: NFKC, confusables -> Latin, lowercase, masked code/URL/e-mail/hex ids,
    numbers -> ``0``, runs of spaces -> one space, runs of blank lines -> one newline, trimmed."""
    return (
        expr.map_batches(_compatibility_forms, return_dtype=pl.String())
        .str.to_lowercase()
        .str.replace_all(r"(?s)```.*?(?:```|$)", f" {CODE_PLACEHOLDER} ")
        .str.replace_all(r"\b(?:https?://|www\.)\S+", f" {URL_PLACEHOLDER} ")
        .str.replace_all(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", f" {EMAIL_PLACEHOLDER} ")
        .str.replace_all(r"\b(?:0x[0-9a-f]+|[0-9a-f]{8,}(?:-[0-9a-f]{4,})*)\b", f" {HEX_PLACEHOLDER} ")
        .str.replace_all(r"\d+(?:[.,]\d+)*", "0")
        .str.replace_all(r"[^\S\n]+", " ")
        .str.replace_all(r" ?\n\s*", "\n")
        .str.strip_chars()
    )


def prompt_ends(expr: pl.Expr, *, n_chars: int = PROMPT_END_CHARS) -> pl.Expr:
    """The first and last `n_chars` characters of a long prompt (joined by a newline); short ones whole."""
    return (
        pl.when(expr.str.len_chars() > 2 * n_chars)
        .then(pl.concat_str([expr.str.head(n_chars), pl.lit("\n"), expr.str.tail(n_chars)]))
        .otherwise(expr)
    )


# Capability patterns, written for normalised text (lowercase, numbers -> 0, code blocks -> <code>).
_REASONING = (
    r"step[- ]by[- ]step|chain[- ]of[- ]thought|\bshow (?:all )?(?:of )?your (?:work|working|reasoning|steps|"
    r"thinking|thought process)|\bexplain (?:all )?(?:of )?your (?:reasoning|answer|thinking|steps|logic)|"
    r"\bjustify your (?:answer|reasoning)|\bthink (?:carefully|logically|through|it through|this through|"
    r"about (?:this|it) (?:carefully|step))|\blet'?s think\b|\blet us think\b|\breason (?:through|carefully|"
    r"about it)|\bwalk (?:me )?through (?:your|the) (?:reasoning|steps|solution)|\bthought process\b|"
    r"\bthink before\b|<think>|\breasoning (?:steps|trace|chain)\b|\bshow (?:the|all) steps\b|"
    # elicitation phrasings seen in harvesting wrappers: intermediate work, boxed answers, thinking aloud
    r"\bthink(?:ing)? (?:out loud|aloud)\b|\bintermediate (?:step|calculation|result|reasoning)s?\b|"
    r"\bwithout skipping (?:any )?steps?\b|\b(?:break|split|decompose) (?:the|this) (?:\w+ ){0,2}into "
    r"(?:small(?:er)? )?steps\b|\bone step at a time\b|\b(?:go|work) through (?:your|the|this|it)\b.{0,40}"
    r"\b(?:reasoning|steps|carefully|thoroughly|detail|step)\b|\bafter your reasoning\b|\\\\?boxed|"
    r"\b(?:full|complete|detailed) (?:reasoning|derivation|working|chain of thought)\b"
)
# coding, as three patterns: one alternation of all three compiles to a regex ~4x slower than the
# three run one after another (its bounded `.{0,60}` gaps defeat the literal prefilter)
_CODING_PARTS = (
    r"<code>|\bdef \w+\(|\bfunction \w*\s*\(|#include\b|\bimport \w+|\bconsole\.log\b|\bpublic static\b|"
    r"\bunit tests?\b|\bdocstrings?\b|\btime complexity\b|\bcompiler? error\b",
    r"\b(?:write|implement|create|build|fix|debug|refactor|optimi[sz]e|review|complete|translate|convert)\b"
    r".{0,60}\b(?:code|function|script|program|class|method|algorithm|snippet|regex|sql query|api endpoint|"
    r"unit tests?)\b",
    r"\b(?:python|javascript|typescript|java|c\+\+|c#|golang|rust|ruby|php|kotlin|swift|bash|"
    r"sql|html|css|react|node\.?js)\b.{0,40}\b(?:code|function|script|program|class|method|query|snippet|"
    r"implementation|solution)\b",
)
_CODING = "|".join(_CODING_PARTS)
_AGENTIC = (
    r"\byou are an? (?:\w+ ){0,2}agent\b|\bagent\b.{0,60}\btools?\b|\btools? (?:access|available|calls?)\b|"
    r"\b(?:access to|use|call) (?:the following |these |a |one of the )?(?:tools|functions)\b|"
    r"\bavailable (?:functions|tools|actions)\b|\bfunction[ _]call(?:ing|s)?\b|\btool[ _]?(?:call|use)s?\b|"
    r"\baction[ _]input\b|\"action\"|\"tool\"|\"arguments\"|\bthought:.{0,200}\baction:|\bobservation:|"
    r"\breact[- ](?:style|agent|format|loop)\b|\bjson action\b|\baction plan\b|\btoolformer\b|<tool|"
    r"\bfinal answer:.{0,100}\baction\b"
)
_RUBRIC_GRADING = (
    r"\brubric\b|\b(?:grade|score|rate|evaluate|assess|judge|critique)\b.{0,60}\b(?:answer|response|essay|"
    r"submission|output|completion|reply|summary|translation)s?\b|\bon a scale (?:of|from) 0\b|"
    r"\bresponse a\b.{0,400}\bresponse b\b|\[\[a\]\]|\bwhich (?:response|answer|assistant|output) is "
    r"(?:better|more)\b|\bverdict\b|\bact as (?:a |an )?(?:impartial )?(?:judge|grader|evaluator)\b|"
    r"\bscore (?:of|from|between) 0\b|\bout of 0\b"
)


def prompt_capability(expr: pl.Expr) -> pl.Expr:
    """Capability a prompt targets: rubric_grading, agentic, reasoning, coding (first match in that order:
    grading a coding answer is grading; a CoT elicitation on a code task is reasoning), else other.
    Pass normalised text (`normalised_prompt`): the patterns are lowercase and case-sensitive, as a
    case-insensitive regex costs twice as much over Unicode text; null stays null."""

    def has(pattern: str) -> pl.Expr:
        return expr.str.contains(pattern)

    return (
        pl.when(expr.is_null())
        .then(pl.lit(None, dtype=pl.String()))
        .when(has(_RUBRIC_GRADING))
        .then(pl.lit(RUBRIC_GRADING))
        .when(has(_AGENTIC))
        .then(pl.lit(AGENTIC))
        .when(has(_REASONING))
        .then(pl.lit(REASONING))
        .when(pl.any_horizontal([has(part) for part in _CODING_PARTS]))
        .then(pl.lit(CODING))
        .otherwise(pl.lit(OTHER))
    )


def phrase_keys(norm: pl.Series, only: pl.Series | None = None) -> pl.Series:
    """Distinct 64-bit hashes of the word PHRASE_WORDS-shingles within each clause of normalised prompts.

    With `only` (booleans), of those rows alone: the others are null.

    Clauses (text between punctuation or line breaks) of PHRASE_MIN_WORDS to PHRASE_MAX_WORDS words:
    a wrapper's sentences, not a paragraph of content; a clause shorter than a shingle is one key.
    Shingles, not whole clauses: a paraphrase swaps a word, a typo breaks one, and the rest of the
    clause still matches (seeds 1303 and 3033: an evasive ring's members share 3-13 shingles in the
    first hour, 0-3 whole clauses). One numba pass over the texts' bytes (`_minhash.phrase_shingles`),
    each word hashed once: 8x the splitting and joining of Polars string lists it replaced.
    """
    picked = norm if only is None else norm.filter(only)
    data, offsets = _minhash.string_buffers(picked.to_arrow())
    row, key = _minhash.phrase_shingles(data, offsets, PHRASE_MIN_WORDS, PHRASE_MAX_WORDS, PHRASE_WORDS)
    where = np.arange(norm.len(), dtype=np.int64) if only is None else np.flatnonzero(only.to_numpy())
    keys = (
        pl.DataFrame({"_r": where[row], "_k": pl.Series(key, dtype=pl.UInt64)})
        .group_by("_r", maintain_order=True)
        .agg(pl.col("_k").unique(maintain_order=True))
    )
    rows = pl.DataFrame({"_r": np.arange(norm.len(), dtype=np.int64)})
    return rows.join(keys, on="_r", how="left", maintain_order="left").get_column("_k").alias(PHRASE_KEYS)


def _targeted_phrase_keys(df: pl.DataFrame) -> pl.Series:
    """`phrase_keys` of the rows (_NORM, CAPABILITY) whose prompt targets a capability, null for the others."""
    return phrase_keys(df.get_column(_NORM), (df.get_column(CAPABILITY) != OTHER).fill_null(False))


def _hash_distinct(df: pl.DataFrame, *, keys: bool, wrapper_only: bool = False, phrases: bool = False) -> pl.DataFrame:
    """Template id (band keys, phrase keys) of each row's normalised text (column _NORM); null where no words."""
    if phrases:
        df = df.with_columns(_targeted_phrase_keys(df))
    valid, tid, band_keys, side = _minhash.hash_skeletons(df.get_column(_NORM).to_arrow(), chosen_only=wrapper_only)
    if wrapper_only:
        # keep the bands of the side chosen as the wrapper: the other side is content, and content
        # (a benchmark question, a common request) is what unrelated accounts share by chance
        half = band_keys.shape[1] // 2
        band_keys = np.where(side[:, None] == 1, band_keys[:, half:], band_keys[:, :half])
    cols = [
        pl.Series("__valid", valid, dtype=pl.Boolean()),
        pl.Series(TEMPLATE_ID, tid, dtype=pl.UInt64()),
    ]
    if keys:
        cols.append(pl.Series(TEMPLATE_KEYS, band_keys, dtype=pl.Array(pl.UInt64(), band_keys.shape[1])))
    hashed = pl.DataFrame(cols).select(
        pl.when(pl.col("__valid")).then(pl.col(TEMPLATE_ID)).alias(TEMPLATE_ID),
        *(
            [
                pl.when(pl.col("__valid"))
                .then(pl.col(TEMPLATE_KEYS).arr.to_list().list.unique(maintain_order=True))
                .alias(TEMPLATE_KEYS)
            ]
            if keys
            else []
        ),
    )
    return pl.concat([df.drop(_NORM), hashed], how="horizontal")


def prompt_fingerprints(
    lf: pl.LazyFrame,
    *,
    prompt_col: str = s.PROMPT,
    keys: bool = False,
    wrapper_keys_only: bool = False,
    phrases: bool = False,
) -> pl.LazyFrame:
    """Add TEMPLATE_ID (UInt64), CAPABILITY (TEMPLATE_KEYS when `keys`, PHRASE_KEYS when `phrases`) to every event.

    Work is done once per distinct prompt text of the frame, then joined back; row order is kept.
    PHRASE_KEYS (`phrase_keys`) are of capability-targeted prompts only (null for others): the
    phrases a harvester's paraphrased wrappers share."""
    schema: dict[str, pl.DataType] = {
        prompt_col: pl.String(),
        TEMPLATE_ID: pl.UInt64(),
        CAPABILITY: pl.String(),
    }
    if keys:
        schema[TEMPLATE_KEYS] = pl.List(pl.UInt64())
    if phrases:
        schema[PHRASE_KEYS] = pl.List(pl.UInt64())
    distinct = (
        lf.select(pl.col(prompt_col))
        .filter(pl.col(prompt_col).is_not_null())
        .unique()
        .with_columns(normalised_prompt(prompt_ends(pl.col(prompt_col))).alias(_NORM))
        .with_columns(prompt_capability(pl.col(_NORM)).alias(CAPABILITY))
        .map_batches(
            lambda df: _hash_distinct(df, keys=keys, wrapper_only=wrapper_keys_only, phrases=phrases).select(
                list(schema)
            ),
            schema=schema,
        )
        .with_columns(pl.when(pl.col(TEMPLATE_ID).is_null()).then(None).otherwise(pl.col(CAPABILITY)).alias(CAPABILITY))
    )
    out = lf.drop([c for c in schema if c != prompt_col], strict=False)
    return out.join(distinct, on=prompt_col, how="left", maintain_order="left")


def template_counts(lf: pl.LazyFrame, *, group_by: str | Sequence[str] = s.ACCOUNT_ID) -> pl.LazyFrame:
    """Partials: events -> (group_by..., TEMPLATE_ID, CAPABILITY, N). Sum-mergeable across batches."""
    names = lf.collect_schema().names()
    if TEMPLATE_ID not in names or CAPABILITY not in names:
        lf = lf.pipe(prompt_fingerprints)
    return (
        lf.filter(pl.col(TEMPLATE_ID).is_not_null())
        .group_by(*([group_by] if isinstance(group_by, str) else group_by), TEMPLATE_ID, CAPABILITY)
        .agg(pl.len().cast(pl.Int64()).alias(N))
    )


def merge_template_counts(*partials: pl.LazyFrame, group_by: str = s.ACCOUNT_ID) -> pl.LazyFrame:
    """Merge partials (running state and new batches): sum N per (group_by, template, capability)."""
    return (
        pl.concat([p.select(group_by, TEMPLATE_ID, CAPABILITY, N) for p in partials], how="vertical")
        .group_by(group_by, TEMPLATE_ID, CAPABILITY)
        .agg(pl.col(N).sum())
    )


def _as_partials(lf: pl.LazyFrame, group_by: str) -> pl.LazyFrame:
    if N in lf.collect_schema().names():
        return lf
    return template_counts(lf, group_by=group_by)


def template_share(lf: pl.LazyFrame, *, group_by: str = s.ACCOUNT_ID) -> pl.LazyFrame:
    """Per account: N_PROMPTS, N_TEMPLATES (distinct ids), TOP_TEMPLATE_ID (most frequent; ties -> the
    smallest id), TOP_TEMPLATE_SHARE (its share of the account's prompts), TEMPLATE_ENTROPY (bits)."""
    per_template = _as_partials(lf, group_by).group_by(group_by, TEMPLATE_ID).agg(pl.col(N).sum())
    p = pl.col(N) / pl.col(N).sum()
    return (
        per_template.sort(group_by, N, TEMPLATE_ID, descending=[False, True, False])
        .group_by(group_by)
        .agg(
            pl.col(N).sum().alias(N_PROMPTS),
            pl.len().cast(pl.Int64()).alias(N_TEMPLATES),
            pl.col(TEMPLATE_ID).first().alias(TOP_TEMPLATE_ID),
            (pl.col(N).first() / pl.col(N).sum()).alias(TOP_TEMPLATE_SHARE),
            (-(p * p.log(2)).sum()).abs().alias(TEMPLATE_ENTROPY),
        )
    )


def template_spread(lf: pl.LazyFrame, *, group_by: str = s.ACCOUNT_ID) -> pl.LazyFrame:
    """Per template: N_ACCOUNTS sharing it, N_EVENTS, EVENTS_PER_ACCOUNT (mean). A template shared by
    thousands of low-volume accounts (an app's wrapper, common homework) has a low EVENTS_PER_ACCOUNT;
    a harvesting ring's has a high one."""
    return (
        _as_partials(lf, group_by)
        .group_by(TEMPLATE_ID, group_by)
        .agg(pl.col(N).sum())
        .group_by(TEMPLATE_ID)
        .agg(pl.len().cast(pl.Int64()).alias(N_ACCOUNTS), pl.col(N).sum().alias(N_EVENTS))
        .with_columns((pl.col(N_EVENTS) / pl.col(N_ACCOUNTS)).alias(EVENTS_PER_ACCOUNT))
    )


def account_template_spread(lf: pl.LazyFrame, *, group_by: str = s.ACCOUNT_ID) -> pl.LazyFrame:
    """Per account: SHARED_TEMPLATE_ACCOUNTS = max over its templates of how many accounts use that
    template (1 = none shared), with that template's id and EVENTS_PER_ACCOUNT (ties -> the template
    with more events per account, then the smallest id)."""
    partials = _as_partials(lf, group_by)
    spread = template_spread(partials, group_by=group_by)
    return (
        partials.select(group_by, TEMPLATE_ID)
        .unique()
        .join(spread, on=TEMPLATE_ID, how="inner")
        .sort(
            group_by,
            N_ACCOUNTS,
            EVENTS_PER_ACCOUNT,
            TEMPLATE_ID,
            descending=[False, True, True, False],
        )
        .group_by(group_by)
        .agg(
            pl.col(N_ACCOUNTS).first().alias(SHARED_TEMPLATE_ACCOUNTS),
            pl.col(TEMPLATE_ID).first().alias(SHARED_TEMPLATE_ID),
            pl.col(EVENTS_PER_ACCOUNT).first().alias(SHARED_TEMPLATE_EVENTS_PER_ACCOUNT),
        )
    )


def capability_mix(lf: pl.LazyFrame, *, group_by: str = s.ACCOUNT_ID) -> pl.LazyFrame:
    """Per account: share of its prompts per capability (cap_<capability>_share) and TARGETED_SHARE
    (share that targets any capability, i.e. not `other`)."""
    total = pl.col(N).sum()
    return (
        _as_partials(lf, group_by)
        .group_by(group_by)
        .agg(
            *[
                (pl.col(N).filter(pl.col(CAPABILITY) == c).sum() / total).alias(col)
                for c, col in CAP_SHARE_COLS.items()
            ],
            (pl.col(N).filter(pl.col(CAPABILITY) != OTHER).sum() / total).alias(TARGETED_SHARE),
        )
    )
