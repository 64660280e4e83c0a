"""Capability-targeted prompt wrappers of extraction rings, their paraphrases and evasions.

A wrapper is built from slots (role, instruction, detail, closing, content label) of a
capability family; a ring either reuses a few fixed slot choices (a template) or draws fresh
choices per request (a paraphrase), and an evasive ring also perturbs the text.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = ("reasoning", "coding", "agentic", "grading")


@dataclass(frozen=True)
class Family:
    """Slot fillers of one capability family."""

    name: str
    roles: tuple[str, ...]
    instructions: tuple[str, ...]
    details: tuple[str, ...]
    closings: tuple[str, ...]
    labels: tuple[str, ...]
    answer_labels: tuple[str, ...] = ()


_FAMILIES: dict[str, Family] = {
    "reasoning": Family(
        "reasoning",
        roles=(
            "",
            "You are a meticulous math tutor.",
            "Act as an expert problem solver.",
            "You are a careful, rigorous reasoner.",
            "You are a top competition mathematician.",
        ),
        instructions=(
            "Think step by step",
            "Reason through the problem one step at a time",
            "Work through this carefully",
            "Break the problem into small steps",
            "Solve the problem below",
            "Go through your reasoning in full detail",
        ),
        details=(
            "showing every intermediate calculation",
            "writing out your complete chain of thought",
            "explaining each step before moving on to the next",
            "checking every intermediate result",
            "without skipping any step",
            "and think out loud as you go",
        ),
        closings=(
            "Then give the final answer on its own line.",
            "End with 'Final answer: <answer>'.",
            "Finish by stating the answer clearly.",
            "Put the final answer in \\boxed{}.",
            "After your reasoning, write the answer after 'Answer:'.",
            "",
        ),
        labels=("Question:", "Problem:", "", "Task:", "### Problem\n"),
    ),
    "coding": Family(
        "coding",
        roles=(
            "You are a senior software engineer.",
            "Act as an expert Python developer.",
            "",
            "You are a world-class competitive programmer.",
            "You are a meticulous code reviewer and engineer.",
        ),
        instructions=(
            "Write a complete, working solution to the task below",
            "Solve the following programming task",
            "Implement a solution for this problem",
            "Produce production-quality code for the task below",
            "Write code that solves this",
        ),
        details=(
            "explaining your approach step by step before writing the code",
            "including docstrings, type hints and comments on every part",
            "walking through the algorithm first and analysing its time and space complexity",
            "adding unit tests that cover the edge cases",
            "reasoning about edge cases before coding",
        ),
        closings=(
            "Return the full code in a single block.",
            "Finish with a short argument for why it is correct.",
            "State the complexity at the end.",
            "",
            "Then list three ways it could fail.",
        ),
        labels=("Task:", "Problem:", "", "### Task\n", "Specification:"),
    ),
    "agentic": Family(
        "agentic",
        roles=(
            "You are an autonomous agent with access to the tools search(query), python(code) and browse(url).",
            "You are a tool-using assistant. Available tools: web_search, calculator, code_interpreter, file_reader.",
            "Act as an AI agent that can call functions.",
            "You are an agent operating in a sandbox with a shell and a browser.",
        ),
        instructions=(
            "Solve the task below by writing out each Thought, Action and Observation in order",
            "Plan the task below and then execute it step by step",
            "Show your full trajectory for the task below",
            "Work on the following task as an agent would",
        ),
        details=(
            "emitting every tool call as JSON with its arguments and a plausible result",
            "including your reasoning, the tool you call, its output and what you decide next",
            "listing the plan first and then each tool invocation with its observation",
            "recording each intermediate observation before the next action",
        ),
        closings=(
            "Stop when you reach the final answer and state it.",
            "End with FINAL ANSWER: followed by the result.",
            "Summarise the outcome at the end.",
            "",
        ),
        labels=("Task:", "Goal:", "User request:", "", "### Task\n"),
    ),
    "grading": Family(
        "grading",
        roles=(
            "You are a strict grader.",
            "Act as an impartial judge evaluating AI responses.",
            "You are an expert reviewer.",
            "",
            "You are a teaching assistant marking answers.",
        ),
        instructions=(
            "Grade the candidate answer to the question below on a scale of 1 to 10",
            "Evaluate the response against a rubric of correctness, completeness, clarity and helpfulness",
            "Score the answer below and list every mistake you find",
            "Compare the answer with what an ideal answer would contain and rate it",
        ),
        details=(
            "justifying each rubric criterion separately before giving the overall score",
            "explaining your reasoning in detail before the verdict",
            "quoting the parts of the answer that are wrong",
            "writing the ideal answer first and then comparing",
        ),
        closings=(
            'Output a JSON object {"score": <1-10>, "rationale": "..."} at the end.',
            "Finish with 'Score: N/10'.",
            "End with the overall grade.",
            "",
        ),
        labels=("Question:", "[Question]\n", "Prompt:", "Q:"),
        answer_labels=("Candidate answer:", "[Response]\n", "Answer to grade:", "A:"),
    ),
}

_ANSWERS = (
    "The answer is {n}.",
    "I think it is {n}, because you add the two parts together.",
    "Yes.",
    "No, that is not correct.",
    "def solution(x):\n    return x * {n}",
    "It depends, but usually {n}.",
    "{n}",
    "First we compute {n}, then divide by two, so the result is {h}.",
    "The main reason is economic: prices rose by {n} percent.",
    "Sorry, I don't know.",
)

# Synonyms the paraphrasing rings rotate through.
_SYNONYMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("step by step", ("one step at a time", "stepwise", "step-by-step", "in steps")),
    ("carefully", ("thoroughly", "with care", "diligently")),
    ("final answer", ("final result", "ultimate answer", "conclusion")),
    ("explaining", ("describing", "laying out", "spelling out")),
    ("complete", ("full", "entire", "whole")),
    ("Solve", ("Work out", "Answer", "Crack")),
    ("every", ("each", "all of the", "every single")),
    ("Write", ("Produce", "Give", "Provide")),
    ("problem", ("question", "exercise", "puzzle")),
    ("detail", ("depth", "full detail", "thoroughness")),
    ("answer", ("response", "reply", "solution")),
    ("task", ("assignment", "job", "request")),
)
# Latin letters and Cyrillic look-alikes (a, e, o, c, p, x, i).
_CONFUSABLES = {
    "a": "\u0430",
    "e": "\u0435",
    "o": "\u043e",
    "c": "\u0441",
    "p": "\u0440",
    "x": "\u0445",
    "i": "\u0456",
}


@dataclass(frozen=True)
class Template:
    """A fixed wrapper: one choice per slot and an order (instruction first or content first)."""

    family: str
    role: int
    instruction: int
    detail: int
    closing: int
    label: int
    answer_label: int
    content_first: bool


def random_template(rng: np.random.Generator, family: str) -> Template:
    """A random slot choice of a family."""
    f = _FAMILIES[family]

    def k(seq: tuple[str, ...]) -> int:
        return int(rng.integers(len(seq))) if seq else 0

    return Template(
        family,
        k(f.roles),
        k(f.instructions),
        k(f.details),
        k(f.closings),
        k(f.labels),
        k(f.answer_labels),
        bool(rng.random() < 0.25),
    )


def render(t: Template, content: str, answer: str = "", head_edit: object = None) -> str:
    """The prompt text of a template around `content` (and a graded `answer`)."""
    f = _FAMILIES[t.family]
    instruction = f"{f.instructions[t.instruction]}, {f.details[t.detail]}."
    head = " ".join(x for x in (f.roles[t.role], instruction, f.closings[t.closing]) if x)
    if callable(head_edit):
        head = head_edit(head)
    label = f.labels[t.label]
    body = content if not label else (label + content if label.endswith("\n") else f"{label} {content}")
    if f.answer_labels:
        al = f.answer_labels[t.answer_label]
        body += "\n\n" + (al + answer if al.endswith("\n") else f"{al} {answer}")
    return f"{body}\n\n{head}" if t.content_first else f"{head}\n\n{body}"


def candidate_answer(rng: np.random.Generator) -> str:
    """A short answer for a grading prompt to grade."""
    n = int(rng.integers(2, 500))
    return _ANSWERS[int(rng.integers(len(_ANSWERS)))].format(n=n, h=n / 2)


def paraphrase(rng: np.random.Generator, text: str, p: float = 0.35) -> str:
    """Swap phrases for synonyms, each with probability `p`."""
    for phrase, alts in _SYNONYMS:
        if phrase in text and rng.random() < p:
            text = text.replace(phrase, alts[int(rng.integers(len(alts)))], 1)
    return text


def perturb(rng: np.random.Generator, text: str) -> str:
    """Evade exact matching: typos, Cyrillic confusables, odd whitespace, clause order."""
    if rng.random() < 0.35 and ". " in text:
        # Reorder clauses: move the first sentence to the end.
        first, rest = text.split(". ", 1)
        text = f"{rest.rstrip()} {first}."
    chars = list(text)
    letters = [i for i, ch in enumerate(chars) if ch.isalpha()]
    if letters and rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 3))):
            i = letters[int(rng.integers(len(letters)))]
            op = rng.random()
            if op < 0.4 and i + 1 < len(chars):
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
            elif op < 0.7:
                chars[i] = ""
            else:
                chars[i] = chars[i] * 2
    if rng.random() < 0.35:
        cand = [i for i, ch in enumerate(chars) if ch in _CONFUSABLES]
        for _ in range(int(rng.integers(1, 4))):
            if cand:
                i = cand[int(rng.integers(len(cand)))]
                chars[i] = _CONFUSABLES.get(chars[i], chars[i])
    text = "".join(chars)
    if rng.random() < 0.4:
        r = rng.random()
        if r < 0.3:
            text = text.replace(" ", "  ", int(rng.integers(1, 4)))
        elif r < 0.55:
            text = text + " " * int(rng.integers(1, 4))
        elif r < 0.8:
            text = " " + text
        else:
            text = text.replace(", ", " ,", 1)
    return text


def family_names() -> tuple[str, ...]:
    """The capability families, in a fixed order (index = family code in events)."""
    return FAMILIES
