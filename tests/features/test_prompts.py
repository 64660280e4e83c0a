# ruff: noqa: E501, RUF001
"""Tests for features/prompts.py: normalisation, template fingerprint quality, capabilities, batch merge.

The quality tests build wrapper families — paraphrases of one harvesting wrapper as different ring
accounts would write them — and fill them with real corpus prompts as content, with per-prompt evasion
noise (typos, homoglyphs, fullwidth letters, zero-width splits, whitespace and case). DEV_FAMILIES were
written before the skeleton/lexicon were designed and used to choose between designs; HOLDOUT_FAMILIES
were written after features/prompt_lexicon.py was frozen and were never used to tune it.
Corpus: $DISTILLGUARD_PROMPTS_CORPUS or ../shared/data/prompts/prompts.jsonl.gz from the repo root.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import schema as s
from features import prompts as P

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(
    os.environ.get("DISTILLGUARD_PROMPTS_CORPUS")
    or REPO_ROOT.parent / "shared" / "data" / "prompts" / "prompts.jsonl.gz"
)

DEV_FAMILIES: dict[str, list[str]] = {
    "cot_prefix": [
        "Think step by step and show all your reasoning before answering: {q}",
        "Show all your reasoning, thinking step by step, before answering: {q}",
        "Before you answer, think step by step and show your full reasoning.\n{q}",
        "Think through this step by step, showing all of your reasoning before giving the answer: {q}",
    ],
    "zero_shot_cot": [
        "{q}\nLet's think step by step.",
        "{q}\n\nLet us think about this step by step.",
        "{q} Let's think this through step by step.",
        "{q}\nLet's go step by step.",
    ],
    "math_boxed": [
        "Solve the following math problem. Put your final answer within \\boxed{{}}.\n\nProblem: {q}\n\nSolution:",
        "Please solve this math problem and put the final answer inside \\boxed{{}}.\nProblem: {q}\nSolution:",
        "Solve the math problem below. Your final answer must be placed in \\boxed{{}}.\n\nProblem:\n{q}\n\nSolution:",
        "Problem: {q}\nSolve the problem above and write your final answer in \\boxed{{}}.",
    ],
    "expert_tutor": [
        "You are an expert tutor. Explain your reasoning clearly and in detail, then give the final answer.\n\nQuestion: {q}",
        "You are an expert teacher. Clearly explain your reasoning in detail and then state the final answer.\n\nQuestion: {q}",
        "As an expert tutor, explain your reasoning in detail and clearly, then provide the final answer.\nQuestion: {q}",
    ],
    "python_solution": [
        "Write a Python solution for the following task. Include type hints and docstrings, and explain the time complexity.\n\n{q}",
        "Write Python code to solve the task below, with type hints and docstrings, and explain its time complexity.\n\n{q}",
        "{q}\n\nWrite a Python solution with type hints and docstrings and explain the time complexity.",
        "Solve this task in Python. Use type hints, add docstrings and state the time complexity.\n{q}",
    ],
    "react_agent": [
        'You are an agent with access to tools. Respond with a JSON action plan using the format {{"thought": ..., "action": ..., "action_input": ...}}.\nTask: {q}',
        'You are an autonomous agent that can call tools. Reply with a JSON action plan in the form {{"thought": ..., "action": ..., "action_input": ...}}.\nTask: {q}',
        'Act as an agent with tool access. Produce a JSON action plan formatted as {{"thought": ..., "action": ..., "action_input": ...}}.\n\nTask: {q}',
    ],
    "rubric_grade": [
        "Grade the following answer on a scale of 1 to 10 using the rubric: correctness, clarity, completeness. Explain the score.\n\nQuestion: {q}\nAnswer: {a}",
        "Using the rubric (correctness, clarity, completeness), score the answer below from 1 to 10 and justify the score.\nQuestion: {q}\nAnswer: {a}",
        "Rate the answer below from 1-10 on correctness, clarity and completeness, and explain the rating.\n\nQuestion: {q}\n\nAnswer: {a}",
    ],
    "pairwise_judge": [
        "Which response is better, A or B? Evaluate both responses to the user question and output your verdict as [[A]] or [[B]].\n\n[Question]\n{q}\n\n[Response A]\n{a}\n\n[Response B]\n{b}",
        "Evaluate the two responses to the user question below and decide which one is better. Output your verdict as [[A]] or [[B]].\n\n[Question]\n{q}\n\n[Response A]\n{a}\n\n[Response B]\n{b}",
        "Compare response A and response B to the question and output the verdict [[A]] or [[B]] for the better one.\n[Question]\n{q}\n[Response A]\n{a}\n[Response B]\n{b}",
    ],
    "one_sentence": [
        "{q}\nAnswer in one sentence.",
        "{q}\nReply with a single sentence.",
        "{q} Please answer in just one sentence.",
    ],
    "comprehensive": [
        "Provide a detailed, comprehensive answer to the following question, covering all relevant aspects: {q}",
        "Give a comprehensive and detailed answer covering every relevant aspect of this question: {q}",
        "Answer the following question in a detailed and comprehensive way, covering all relevant aspects.\n{q}",
    ],
    "json_keys": [
        '{q}\n\nFormat your response as JSON with keys "reasoning" and "answer".',
        '{q}\nReturn JSON containing the keys "reasoning" and "answer".',
        '{q}\n\nRespond only with a JSON object that has the keys "reasoning" and "answer".',
    ],
    "self_critique": [
        "{q}\n\nFirst answer the question, then critique your own answer and give an improved final version.",
        "{q}\nAnswer, then review your answer critically and provide a revised final answer.",
        "{q}\n\nAnswer the question first. Then critique your answer and write an improved final version.",
    ],
    "training_data": [
        "Generate a high-quality answer suitable for training data. Be accurate and thorough.\n\nInstruction: {q}\n\nResponse:",
        "Produce an accurate, thorough, high-quality response to be used as training data.\nInstruction: {q}\nResponse:",
        "Write a thorough and accurate high-quality response that can be used as training data.\n\nInstruction: {q}\nResponse:",
    ],
    "alpaca_format": [
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{q}\n\n### Response:",
        "Below is an instruction describing a task. Write a response that completes the request appropriately.\n\n### Instruction:\n{q}\n\n### Response:",
        "The following is an instruction that describes a task. Write a response which appropriately completes the request.\n### Instruction:\n{q}\n### Response:",
    ],
    "three_solutions": [
        "Give three different solutions to the problem below and explain which one is best.\n{q}",
        "Provide 3 alternative solutions for the following problem and explain which is the best one:\n{q}",
        "{q}\n\nGive three different ways to solve this and explain which one is best.",
    ],
    "numbered_steps": [
        "{q}\nBreak your answer into numbered steps and finish with a one-line summary.",
        "{q}\n\nStructure the answer as numbered steps, ending with a one-line summary.",
        "{q}\nPlease answer as a list of numbered steps followed by a one line summary.",
    ],
    "code_review": [
        "Review the following code for bugs and security issues, then provide a corrected version:\n{q}",
        "Find any bugs or security problems in this code and give a fixed version:\n{q}",
        "Check the code below for bugs and security issues and provide a corrected version.\n\n{q}",
    ],
    "eli5": [
        "Explain the answer to this like I'm five years old: {q}",
        "Explain like I am 5 years old: {q}",
        "Explain this to me as if I were a five year old: {q}",
    ],
    "cite_sources": [
        "{q}\n\nAnswer with citations. Cite at least two reliable sources and list them at the end.",
        "{q}\nInclude citations in your answer, citing at least 2 reliable sources listed at the end.",
        "{q}\n\nPlease cite at least two reliable sources in your answer and list the references at the end.",
    ],
    "tool_call": [
        'You can call the following functions: search(query), calculator(expression). To call one, reply with {{"name": <function>, "arguments": {{...}}}}. User request: {q}',
        'Available functions: search(query), calculator(expression). Call a function by replying {{"name": <function>, "arguments": {{...}}}}.\nUser request: {q}',
        'You have these functions: search(query) and calculator(expression). Reply with {{"name": <function>, "arguments": {{...}}}} to use one.\n\nUser request: {q}',
    ],
    "persona_sys": [
        "You are ChatGPT, a large language model. Answer as helpfully and accurately as possible.\n\nUser: {q}\nAssistant:",
        "You are a large language model assistant. Answer as accurately and helpfully as you can.\nUser: {q}\nAssistant:",
        "You are a helpful large language model. Answer as accurately and as helpfully as possible.\n\nUser: {q}\n\nAssistant:",
    ],
    "socratic": [
        "Answer the following by first listing the key facts you need, then reasoning from them to a conclusion.\n{q}",
        "First list the key facts needed, then reason from those facts to a conclusion. Question: {q}",
        "{q}\n\nStart by listing the key facts you need, then reason from them to your conclusion.",
    ],
    "verify_answer": [
        "{q}\nAfter answering, double-check your answer for mistakes and state your confidence from 0 to 100%.",
        "{q}\n\nOnce you have answered, double check the answer for errors and give your confidence (0-100%).",
        "{q} When done, verify your answer for mistakes and report a confidence between 0 and 100 percent.",
    ],
    "multi_lang": [
        "Answer the question below in English, then translate your answer into French.\n{q}",
        "Answer this question in English and then translate the answer into French: {q}",
        "{q}\n\nRespond in English first, then give a French translation of your answer.",
    ],
}

HOLDOUT_FAMILIES: dict[str, list[str]] = {
    "careful_reasoning": [
        "Carefully analyze the question below and reason it out before you commit to an answer.\n{q}",
        "Reason carefully about the question below before committing to an answer:\n{q}",
        "Analyze the following question carefully and work out the reasoning before you answer.\n{q}",
    ],
    "answer_with_why": [
        "{q}\n\nProvide your answer along with a short explanation of why it is correct.",
        "{q}\nGive the answer plus a brief explanation of why it's correct.",
        "{q}\n\nAnswer, and briefly explain why your answer is correct.",
    ],
    "senior_engineer": [
        "Respond as a senior software engineer would. Include code where relevant and explain trade-offs.\n\n{q}",
        "Answer like a senior software engineer: include code when relevant and discuss the trade-offs.\n{q}",
        "As a senior software engineer, respond with code where relevant and explain the trade-offs.\n\n{q}",
    ],
    "pick_tool": [
        "Here is a user query. Decide which tool to use (search, calculator, code_interpreter) and output the tool call as JSON.\nQuery: {q}",
        "Given the user query below, pick the right tool (search, calculator or code_interpreter) and emit the tool call as JSON.\nQuery: {q}",
        "Decide which tool (search, calculator, code_interpreter) fits this user query and output the JSON tool call.\n\nQuery: {q}",
    ],
    "hh_scores": [
        "Score the following response for helpfulness and harmlessness on a 1-5 scale. Output only the two scores.\n\nPrompt: {q}\nResponse: {a}",
        "Rate this response on helpfulness and harmlessness using a 1 to 5 scale; output just the two scores.\nPrompt: {q}\nResponse: {a}",
        "On a scale of 1-5, score the response below for helpfulness and for harmlessness. Only output the two scores.\n\nPrompt: {q}\n\nResponse: {a}",
    ],
    "answer_line": [
        "{q}\n\nThink it through carefully, then give your final answer on the last line in the form 'Answer: X'.",
        "{q}\nThink carefully, and put the final answer on the last line as 'Answer: X'.",
        "{q}\n\nWork through it carefully and end with a last line of the form 'Answer: X'.",
    ],
    "bullet_summary": [
        "Summarize the text below in three bullet points.\n\n{q}",
        "Give a three-bullet summary of the following text:\n{q}",
        "{q}\n\nSummarize the above in 3 bullet points.",
    ],
    "ideal_reply": [
        "I'm building a dataset. Write an ideal assistant response to this user message, as detailed as needed.\nUser message: {q}",
        "For a dataset I'm building, write the ideal assistant reply to the user message below, with as much detail as needed.\nUser message: {q}",
        "Write the ideal assistant response to the following user message for my dataset, as detailed as necessary.\n\nUser message: {q}",
    ],
}

_HOMOGLYPHS = {"a": "а", "e": "е", "o": "о", "c": "с", "p": "р", "x": "х", "i": "і", "y": "у"}


def _noisy(text: str, rng: random.Random) -> str:
    """Per-prompt evasion noise on wrapper text: 0-2 typos, homoglyphs, fullwidth, zero-width, spacing, case."""
    out = text
    words = re.findall(r"[A-Za-z]{4,}", out)
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        if not words:
            break
        w = rng.choice(words)
        k = rng.randrange(1, len(w) - 1)
        op = rng.randrange(3)
        typo = (w[:k] + w[k + 1] + w[k] + w[k + 2 :], w[:k] + w[k + 1 :], w[:k] + w[k] + w[k:])[op]
        out = out.replace(w, typo, 1)
    if rng.random() < 0.3:
        out = "".join(_HOMOGLYPHS[c] if c in _HOMOGLYPHS and rng.random() < 0.3 else c for c in out)
    if rng.random() < 0.2:
        out = "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalpha() and rng.random() < 0.3 else c for c in out)
    if rng.random() < 0.2:
        out = "".join(c + "\u200b" if c.isalpha() and rng.random() < 0.1 else c for c in out)
    if rng.random() < 0.3:
        out = out.replace(" ", rng.choice(["  ", " \u00a0", "\t"]))
    if rng.random() < 0.15:
        out = out.upper()
    elif rng.random() < 0.15:
        out = out.lower()
    return out


def _render(template: str, rng: random.Random, contents: list[str]) -> str:
    out = []
    for part in re.split(r"(\{q\}|\{a\}|\{b\})", template):
        if part in ("{q}", "{a}", "{b}"):
            out.append(rng.choice(contents))
        else:
            out.append(_noisy(part.replace("{{", "{").replace("}}", "}"), rng))
    return "".join(out)


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    if not CORPUS.exists():
        pytest.skip(f"prompt corpus not found at {CORPUS}")
    return pl.read_ndjson(CORPUS)


def _attack_prompts(
    families: dict[str, list[str]], corpus: pl.DataFrame, *, per_variant: int, seed: int
) -> pl.DataFrame:
    rng = random.Random(seed)
    contents = corpus.filter(pl.col("text").str.len_chars() < 1500)["text"].to_list()
    rows = [
        (fam, vi, _render(v, rng, contents))
        for fam, variants in families.items()
        for vi, v in enumerate(variants)
        for _ in range(per_variant)
    ]
    return pl.DataFrame(rows, schema=["family", "variant", s.PROMPT], orient="row")


def _fingerprint(df: pl.DataFrame, *, keys: bool = False) -> pl.DataFrame:
    return df.lazy().pipe(P.prompt_fingerprints, keys=keys).collect()


def _pair_rates(fp: pl.DataFrame, n_pairs: int = 40_000, seed: int = 7) -> dict[str, float]:
    """Share of sampled prompt pairs with equal template_id (and sharing any template key)."""
    rng = np.random.default_rng(seed)
    fam = fp["family"].to_numpy()
    var = fp["variant"].to_numpy()
    tid = fp[P.TEMPLATE_ID].to_numpy()
    keys = [set(k) for k in fp[P.TEMPLATE_KEYS].to_list()]
    a = rng.integers(0, fp.height, n_pairs)
    b = rng.integers(0, fp.height, n_pairs)
    same_fam = (fam[a] == fam[b]) & (a != b)
    masks = {
        "same_wrapper": same_fam & (var[a] == var[b]),
        "paraphrase": same_fam & (var[a] != var[b]),
        "other_family": fam[a] != fam[b],
    }
    out = {}
    for name, m in masks.items():
        out[f"{name}_id"] = float(np.mean(tid[a[m]] == tid[b[m]]))
        out[f"{name}_keys"] = float(np.mean([bool(keys[i] & keys[j]) for i, j in zip(a[m], b[m], strict=True)]))
    return out


@pytest.fixture(scope="module")
def dev_rates(corpus: pl.DataFrame) -> dict[str, float]:
    return _pair_rates(_fingerprint(_attack_prompts(DEV_FAMILIES, corpus, per_variant=40, seed=1), keys=True))


@pytest.fixture(scope="module")
def holdout_rates(corpus: pl.DataFrame) -> dict[str, float]:
    return _pair_rates(_fingerprint(_attack_prompts(HOLDOUT_FAMILIES, corpus, per_variant=40, seed=2), keys=True))


@pytest.fixture(scope="module")
def human_fp(corpus: pl.DataFrame) -> pl.DataFrame:
    human = corpus.filter(pl.col("kind") == "human").unique("text", keep="first", maintain_order=True)
    return _fingerprint(human.select(pl.col("text").alias(s.PROMPT), "source"), keys=True)


# --- normalisation ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Тhіnk ѕtер bу ѕtер", "think step by step"),  # Cyrillic homoglyphs
        ("Αnswer in Ε𝐧𝐠𝐥𝐢𝐬𝐡", "answer in english"),  # Greek capitals, math bold (NFKC)
        ("ＳＨＯＷ  your\twork", "show your work"),  # fullwidth, spacing
        ("rea\u200bson\u00ading", "reasoning"),  # zero-width space, soft hyphen
        ("  a \n\n\n  b  ", "a\nb"),  # blank lines collapse to one newline
        ("It costs $1,299.99 for 3 items in 2024", "it costs $0 for 0 items in 0"),
        ("Mail bob.smith+x@example.co.uk now", "mail <email> now"),
        ("See https://example.com/a?b=1 and www.x.org/y", "see <url> and <url>"),
        ("commit 3f9a2c1d7e and 0xFF", "commit <hex> and <hex>"),
        ("Fix this:\n```python\nx = 1\n```\nthanks", "fix this:\n<code>\nthanks"),
        ("\u201cQuoted\u201d \u2014 it\u2019s", '"quoted" - it\'s'),
    ],
)
def test_normalised_prompt(raw: str, expected: str) -> None:
    assert pl.select(P.normalised_prompt(pl.lit(raw))).item() == expected


def test_normalised_prompt_keeps_null() -> None:
    assert pl.select(P.normalised_prompt(pl.lit(None, dtype=pl.String()))).item() is None


# --- template fingerprint quality ---


def test_same_wrapper_with_noise_and_new_content_keeps_template(dev_rates, holdout_rates) -> None:
    # Measured (seeded): template_id dev 0.85 / holdout 0.76; any shared key 0.97 / 0.99. The id misses are
    # mostly the wrong end picked as the wrapper (content that reads like an instruction) and typos in
    # 3-letter words; the keys cover both ends, so the linking graph does not depend on that choice.
    assert dev_rates["same_wrapper_id"] >= 0.83, dev_rates
    assert holdout_rates["same_wrapper_id"] >= 0.72, holdout_rates
    assert dev_rates["same_wrapper_keys"] >= 0.95, dev_rates
    assert holdout_rates["same_wrapper_keys"] >= 0.95, holdout_rates


def test_paraphrased_wrappers_share_template(dev_rates, holdout_rates) -> None:
    # Paraphrases here are real rewordings (synonyms, reordered clauses, wrapper moved from the start
    # to the end) on top of the noise. Measured: template_id dev 0.18 / holdout 0.16 (the id is tuned for
    # precision, see test_unrelated_human_prompts_rarely_collide); any shared key 0.57 / 0.66. Lexical
    # fingerprints only go this far; recall within one wrapper is what the per-account concentration
    # features rely on (see test_ring_accounts_concentrate_humans_do_not).
    assert dev_rates["paraphrase_id"] >= 0.15, dev_rates
    assert holdout_rates["paraphrase_id"] >= 0.13, holdout_rates
    assert dev_rates["paraphrase_keys"] >= 0.50, dev_rates
    assert holdout_rates["paraphrase_keys"] >= 0.60, holdout_rates


def test_different_families_rarely_share_template(dev_rates, holdout_rates) -> None:
    # Distinct wrappers built from the same prompt vocabulary ("think step by step" vs "let's think ...")
    # can merge; measured 0.000 for the id, 0.019 / 0.004 for any shared key.
    assert dev_rates["other_family_id"] <= 0.01, dev_rates
    assert holdout_rates["other_family_id"] <= 0.01, holdout_rates
    assert dev_rates["other_family_keys"] <= 0.05, dev_rates


def test_brief_example_paraphrase(corpus: pl.DataFrame) -> None:
    qs = corpus.filter(pl.col("source") == "gsm8k")["text"].head(200).to_list()
    a = [f"Think step by step and show your reasoning: {q}" for q in qs[:100]]
    b = [f"Show all your reasoning, thinking step by step, before answering: {q}" for q in qs[100:]]
    fp = _fingerprint(pl.DataFrame({s.PROMPT: a + b}), keys=True)
    # Content never changes the id: one id per wording ...
    assert fp[P.TEMPLATE_ID].head(100).n_unique() == 1
    assert fp[P.TEMPLATE_ID].tail(100).n_unique() == 1
    # ... and the two wordings share band keys (the single id keeps them apart: 4 vs 6 concepts).
    shared = set(fp[P.TEMPLATE_KEYS][0]) & set(fp[P.TEMPLATE_KEYS][199])
    assert shared


def test_unrelated_human_prompts_rarely_collide(human_fp: pl.DataFrame) -> None:
    rng = np.random.default_rng(3)
    tid = human_fp[P.TEMPLATE_ID].to_numpy()
    a = rng.integers(0, len(tid), 200_000)
    b = rng.integers(0, len(tid), 200_000)
    ok = a != b
    pair_rate = float(np.mean(tid[a[ok]] == tid[b[ok]]))
    # Measured 4.5e-5 of pairs. That includes real shared templates of the corpus (dolly's "Identify which
    # instrument is string or percussion: X", "Which is a species of fish? X or Y", "test").
    assert pair_rate <= 0.0005
    # Share of prompts whose id another prompt of a 5k sample also has: measured 0.06 (0.11 over all 19k).
    sample = human_fp.sample(5000, seed=4)
    shared = sample.group_by(P.TEMPLATE_ID).len().filter(pl.col("len") > 1)["len"].sum()
    assert shared / sample.height <= 0.10


def test_attack_templates_do_not_collide_with_human_prompts(corpus: pl.DataFrame, human_fp: pl.DataFrame) -> None:
    attack = _fingerprint(_attack_prompts(HOLDOUT_FAMILIES, corpus, per_variant=20, seed=5))
    human_ids = set(human_fp[P.TEMPLATE_ID].to_list())
    hit = float(attack[P.TEMPLATE_ID].is_in(list(human_ids)).mean())
    # Measured 0.21. Part of it is by construction: the content of these prompts is drawn from the same
    # corpus, so when the content end is picked as the wrapper the id is that human prompt's own id.
    assert hit <= 0.30


def test_ring_accounts_concentrate_humans_do_not(corpus: pl.DataFrame, human_fp: pl.DataFrame) -> None:
    """Per-account features separate a ring (one noisy wrapper per account, paraphrased across accounts)
    from human accounts sending corpus prompts."""
    rng = random.Random(6)
    contents = corpus["text"].to_list()
    rows = []
    for fam, variants in HOLDOUT_FAMILIES.items():
        for acc in range(3):
            v = variants[acc % len(variants)]
            rows += [(f"ring-{fam}-{acc}", _render(v, rng, contents)) for _ in range(50)]
    humans = human_fp[s.PROMPT].to_list()
    rows += [(f"human-{h}", humans[rng.randrange(len(humans))]) for h in range(200) for _ in range(25)]
    events = pl.LazyFrame(rows, schema=[s.ACCOUNT_ID, s.PROMPT], orient="row")
    share = P.template_share(P.template_counts(events)).collect()
    ring = share.filter(pl.col(s.ACCOUNT_ID).str.starts_with("ring"))[P.TOP_TEMPLATE_SHARE]
    human = share.filter(pl.col(s.ACCOUNT_ID).str.starts_with("human"))[P.TOP_TEMPLATE_SHARE]
    assert ring.median() >= 0.8 and human.median() <= 0.1
    assert ring.quantile(0.1) > human.quantile(0.9)


def test_ids_are_stable_across_processes() -> None:
    """Golden ids: same across batches, processes and hash seeds (our own hashing, no batch state)."""
    prompts = [
        "Think step by step and show your reasoning: what is 2+2?",
        "Let's think step by step: Who wrote Hamlet?",
    ]
    code = (
        "import polars as pl; from features import prompts as P; "
        f"print(pl.LazyFrame({{'prompt': {prompts!r}}}).pipe(P.prompt_fingerprints).collect()['template_id'].to_list())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    here = _fingerprint(pl.DataFrame({s.PROMPT: prompts}))[P.TEMPLATE_ID].to_list()
    assert outs.pop().strip() == str(here)


def test_null_and_empty_prompts_have_no_template() -> None:
    fp = _fingerprint(pl.DataFrame({s.PROMPT: [None, "", "   \n ", "?!", "ok"]}, schema={s.PROMPT: pl.String()}))
    assert fp[P.TEMPLATE_ID].to_list()[:4] == [None] * 4
    assert fp[P.TEMPLATE_ID][4] is not None
    assert fp[P.CAPABILITY].to_list() == [None, None, None, None, P.OTHER]


# --- capability ---

CAPABILITY_CASES = {
    P.REASONING: [
        "Think step by step and show all your reasoning before answering: what is 17*23?",
        "A train leaves at 3pm... Let's think step by step.",
        "Solve for x: 2x+3=11. Show your work.",
        "Explain your reasoning: is 91 prime?",
        "Use chain-of-thought before the final answer. Q: how many r in strawberry",
        "Walk me through your reasoning on why the sky is blue.",
    ],
    P.CODING: [
        "Write a Python function that returns the n-th Fibonacci number.",
        "Fix this code:\n```js\nconsole.log(x)\n```",
        "Implement a binary search tree class in C++ with insert and delete.",
        "def add(a, b):\n    return a - b\nWhat is wrong here?",
        "Write unit tests for the parser module.",
        "Can you refactor this script to be faster?",
    ],
    P.AGENTIC: [
        "You are an agent with access to tools. Respond with a JSON action plan.",
        'Available functions: search(query). Reply with {"name": "search", "arguments": {"query": "x"}}',
        "Thought: I need the weather.\nAction: weather\nAction Input: Paris\nObservation:",
        "You are an autonomous agent. Decide which tool to call next.",
        "Use the following tools to answer: search, calculator.",
    ],
    P.RUBRIC_GRADING: [
        "Grade the following answer on a scale of 1 to 10 using the rubric below.",
        "Which response is better, A or B? Output your verdict as [[A]] or [[B]].",
        "Please act as an impartial judge and evaluate the quality of the response provided.",
        "Score this essay out of 10 for clarity and argument.",
        "Evaluate response A vs response B for helpfulness.",
    ],
    P.OTHER: [
        "What is the capital of France?",
        "Write a poem about the sea.",
        "Who won the world cup in 2018?",
        "Give me three ideas for a birthday party.",
        "Translate 'good morning' into Spanish.",
        "What's the step count goal for a healthy adult?",
    ],
}


def test_capability_examples() -> None:
    rows = [(cap, text) for cap, texts in CAPABILITY_CASES.items() for text in texts]
    df = pl.DataFrame(rows, schema=["expected", s.PROMPT], orient="row", infer_schema_length=None)
    got = df.with_columns(P.prompt_capability(P.normalised_prompt(pl.col(s.PROMPT))).alias("got"))
    wrong = got.filter(pl.col("got") != pl.col("expected"))
    assert wrong.is_empty(), wrong.to_dicts()
    fp = _fingerprint(df.select(s.PROMPT))
    assert fp[P.CAPABILITY].to_list() == df["expected"].to_list()


def test_capability_sees_through_homoglyphs() -> None:
    assert pl.select(P.prompt_capability(P.normalised_prompt(pl.lit("Lеt's thіnk stер by stер")))).item() == P.REASONING


def test_capability_mix_shares() -> None:
    events = pl.LazyFrame(
        {
            s.ACCOUNT_ID: ["a"] * 4 + ["b"],
            s.PROMPT: [
                "Let's think step by step: 1+1?",
                "Write a Python function to sort a list.",
                "What is the capital of Peru?",
                None,
                "Grade this answer on a rubric: 42",
            ],
        }
    )
    mix = P.capability_mix(events).collect().sort(s.ACCOUNT_ID)
    a = mix.row(0, named=True)
    assert a[P.CAP_REASONING_SHARE] == pytest.approx(1 / 3)
    assert a[P.CAP_CODING_SHARE] == pytest.approx(1 / 3)
    assert a[P.CAP_OTHER_SHARE] == pytest.approx(1 / 3)
    assert a[P.TARGETED_SHARE] == pytest.approx(2 / 3)
    assert mix.row(1, named=True)[P.CAP_RUBRIC_GRADING_SHARE] == 1.0


# --- streaming contract: partials merge exactly across any batch split ---

_POOL = [
    "Think step by step and show your reasoning: what is 2+2?",
    "Show all your reasoning, thinking step by step, before answering: what is 3+5?",
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Grade the following answer on a rubric: Paris",
    "You are an agent with access to tools. Task: book a flight",
    "Who wrote Hamlet?\nLet's think step by step.",
    "",
    None,
    "ok",
]


def _finals(partials: pl.LazyFrame) -> dict[str, pl.DataFrame]:
    return {
        "share": P.template_share(partials).collect().sort(s.ACCOUNT_ID),
        "spread": P.template_spread(partials).collect().sort(P.TEMPLATE_ID),
        "account_spread": P.account_template_spread(partials).collect().sort(s.ACCOUNT_ID),
        "mix": P.capability_mix(partials).collect().sort(s.ACCOUNT_ID),
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(_POOL)), min_size=1, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6),
)
def test_batch_partials_merge_to_single_pass(events, cuts) -> None:
    df = pl.DataFrame(events, schema={s.ACCOUNT_ID: pl.String(), s.PROMPT: pl.String()}, orient="row")
    single = P.template_counts(df.lazy())
    bounds = sorted({0, df.height, *(min(c, df.height) for c in cuts)})
    state = pl.LazyFrame(schema=P.TEMPLATE_COUNTS_SCHEMA)
    for lo, hi in itertools.pairwise(bounds):
        state = P.merge_template_counts(state, P.template_counts(df.slice(lo, hi - lo).lazy())).collect().lazy()
    key = [s.ACCOUNT_ID, P.TEMPLATE_ID, P.CAPABILITY]
    assert single.collect().sort(key).equals(state.collect().sort(key))
    want, got = _finals(single), _finals(state)
    for name in want:
        assert want[name].equals(got[name]), name
    # per-event ids do not depend on the batch either
    whole = _fingerprint(df)[P.TEMPLATE_ID]
    parts = pl.concat([_fingerprint(df.slice(lo, hi - lo))[P.TEMPLATE_ID] for lo, hi in itertools.pairwise(bounds)])
    assert whole.equals(parts)


def test_hashing_only_the_wrapper_side_gives_the_same_ids_and_wrapper_keys() -> None:
    import pyarrow as pa

    from features import _minhash

    texts = [
        "think step by step and show your reasoning.\nwhat is 0 plus 0?",
        "what is the capital of france?\nanswer in one word and explain your reasoning step by step.",
        "write a python function that reverses a list",
        "",
        "hello",
        "please grade the following essay on a scale of 0 to 0.\n<code>\nbe strict and justify your score.",
    ] * 3
    arr = pa.array(texts, pa.large_string())
    full = _minhash.hash_skeletons(arr)
    chosen = _minhash.hash_skeletons(arr, chosen_only=True)
    for a, b in zip((full[0], full[1], full[3]), (chosen[0], chosen[1], chosen[3]), strict=True):
        assert np.array_equal(a, b)
    half = full[2].shape[1] // 2
    side = full[3][:, None] == 1
    wrapper = np.where(side, full[2][:, half:], full[2][:, :half])
    assert np.array_equal(wrapper, np.where(side, chosen[2][:, half:], chosen[2][:, :half]))
    assert set(full[3].tolist()) == {0, 1}  # both sides chosen somewhere: both branches are tested


def test_phrase_keys_are_a_targeted_prompts_clause_shingles_through_noise() -> None:
    # two paraphrased wrappers of one family around different questions share their common clauses'
    # shingles, whatever the case, homoglyphs and spacing; short clauses and untargeted prompts give none
    prompts = [
        "You are a strict grader. Grade the answer against an ideal one.\n\nQuestion: How many moons does Mars have?",
        "Sсore the answer from 1 to 10, then justify.  YOU ARE A STRICT GRADER.\n\nQuestion: Why is the sky blue?",
        "Tell me a joke about cats. Please.",
    ]
    fp = P.prompt_fingerprints(pl.LazyFrame({s.PROMPT: prompts}), phrases=True).collect()
    keys = fp.get_column(P.PHRASE_KEYS).to_list()
    assert fp.get_column(P.CAPABILITY).to_list()[:2] == [P.RUBRIC_GRADING, P.RUBRIC_GRADING]
    shared = set(keys[0]) & set(keys[1])
    assert len(shared) == 2  # "you are a strict", "are a strict grader"
    # shingles of each clause, not across clauses: 2 + 4 + 3 and 4 + 2 + 2 ("then justify" is too short)
    assert len(keys[0]) == 9 and len(keys[1]) == 8
    assert keys[2] is None
    # a typo breaks the shingles holding the word, not the clause's others
    typo = P.phrase_keys(pl.Series(["grade the answer against an ideal one", "grade the answr against an ideal one"]))
    assert len(set(typo[0]) & set(typo[1])) == 1  # "against an ideal one"
    # without `phrases`, the fingerprints are as before
    assert P.PHRASE_KEYS not in P.prompt_fingerprints(pl.LazyFrame({s.PROMPT: prompts})).collect().columns
