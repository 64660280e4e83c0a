"""Prompt-instruction vocabulary for template skeletons (see features/prompts.py).

Handwritten from general prompt-engineering usage, not derived from any corpus. Each concept groups words
that paraphrases of a wrapper swap for one another ("reply" / "respond" / "answer"); a word maps to its
concept so that a reworded wrapper keeps its fingerprint. Inflections (-s, -ed, -ing, -ly) are generated.
STOP words carry no template identity and are left out of fingerprints.

Changing anything here changes every template id: treat it as a versioned constant (TEMPLATE_VERSION in
features/prompts.py).
"""

from __future__ import annotations

CONCEPTS: dict[str, str] = {
    "reason": ("reason reasoning think thinking thought thoughts rationale logic logical deliberate ponder consider"),
    "step": ("step steps stepwise incremental incrementally gradual gradually sequential sequentially"),
    "explain": ("explain explanation justify justification elaborate clarify describe description interpret"),
    "give": (
        "give provide produce generate output return state offer supply deliver print present "
        "show display share respond reply"
    ),
    "write": "write compose draft author rewrite",
    "work": "work workings process derivation derive calculation compute computation working",
    "detailed": (
        "detailed detail details thorough thoroughly comprehensive comprehensively extensive "
        "complete completely full fully entire in-depth exhaustive completeness"
    ),
    "brief": "brief briefly concise concisely short succinct succinctly terse compact",
    "clear": "clear clearly clarity plain understandable readable",
    "simple": "simple simply easy plain beginner layman novice child kid eli5",
    "accurate": (
        "accurate accurately accuracy correct correctly correctness precise precisely exact "
        "exactly factual factually right"
    ),
    "answer": "answer answers response responses reply replies result results",
    "question": (
        "question questions query queries problem problems task tasks exercise exercises "
        "prompt request requests instruction instructions input inputs puzzle challenge"
    ),
    "solve": "solve solving resolve tackle",
    "solution": "solution solutions",
    "final": "final finally conclusion conclude ultimately end ending finish last",
    "first": "first firstly begin start initially before prior beforehand",
    "then": "then next after afterwards subsequently afterward once",
    "check": (
        "check verify verification validate confirm review proofread critique criticize "
        "critically reflect reconsider double-check doublecheck"
    ),
    "grade": (
        "grade score scores rate rating rank ranking evaluate evaluation assess assessment "
        "judge judgement judgment mark marks"
    ),
    "improve": "improve improvement revise revision refine refinement edit enhance polish",
    "fix": "fix debug repair patch corrected",
    "format": ("format formatted formatting structure structured layout style template organize organise"),
    "json": "json yaml xml schema field fields property properties keys",
    "markdown": "markdown table tables heading headings header headers",
    "list": "list lists bullet bullets bulleted numbered enumerate itemize point points",
    "sentence": "sentence sentences paragraph paragraphs line lines word words character characters",
    "summary": "summary summarize summarise recap overview tldr",
    "you": "you your yourself yours",
    "expert": ("expert experts specialist professional master experienced seasoned senior skilled world-class"),
    "assistant": "assistant ai model chatbot bot llm gpt chatgpt claude gemini",
    "role": "act role pretend persona roleplay imagine behave",
    "tutor": "tutor teacher professor instructor educator mentor coach",
    "profession": (
        "mathematician programmer developer engineer scientist analyst coder physicist doctor "
        "lawyer historian economist consultant researcher"
    ),
    "helpful": "helpful helpfulness harmless honest honesty friendly polite",
    "user": "user users human customer client",
    "system": "system",
    "please": "please kindly",
    "ensure": "ensure sure must required require requirement",
    "use": "use using utilize utilise employ apply",
    "following": "following follows below above given provided attached",
    "include": "include including contain containing incorporate add",
    "cite": "cite citation citations source sources reference references bibliography",
    "code": (
        "code coding program programming script snippet implementation implement function "
        "functions method methods routine"
    ),
    "python": "python",
    "javascript": "javascript typescript js",
    "sql": "sql",
    "types": "hint hints annotation annotations typed typing type-hint",
    "doc": "docstring docstrings comment comments documentation document documented",
    "test": "test tests unittest testing pytest assert",
    "complexity": "complexity efficiency efficient performance runtime optimize optimise optimal big-o",
    "bug": ("bug bugs error errors mistake mistakes issue issues flaw flaws vulnerability vulnerabilities"),
    "tool": "tool tools plugin plugins api apis endpoint",
    "call": "call calls invoke invocation execute run",
    "action": "action actions observation observations react trajectory",
    "plan": "plan plans planning strategy approach approaches way ways",
    "argument": "argument arguments args parameter parameters params",
    "agent": "agent agents autonomous agentic",
    "rubric": "rubric criteria criterion scale guideline guidelines",
    "verdict": "verdict decision decide choose pick select winner prefer preferred preference",
    "compare": "compare comparison better best worse worst superior versus",
    "fluent": "fluency fluent coherence coherent",
    "confidence": "confidence confident certainty certain probability likelihood",
    "example": "example examples instance sample samples illustration demonstration",
    "context": "context background passage text document article",
    "translate": "translate translation translated",
    "english": "english",
    "data": "training train dataset data",
    "quality": "quality high excellent great good",
    "different": "different alternative alternatives various multiple several distinct",
    "key": "key important main essential crucial relevant relevance",
    "fact": "fact facts information info evidence knowledge",
    "aspect": "aspect aspects factor factors dimension dimensions",
    "cover": "cover covering address discuss mention",
    "math": "math maths mathematics mathematical arithmetic algebra equation equations",
    "box": "boxed box enclose wrap",
    "put": "put place insert",
    "format_tag": "<code> <url> <email> <hex>",
}

STOP = """
a an the and or but if of to in on at by for with about as into from up down out over under is are
was were be been being am do does did doing done have has had having it its itself this that these
those there here i me my mine myself we our ours us he she him her his they them their theirs what
which who whom whose when where why how can could would will shall may might should not no nor so
than too very just also all any each every some such own same other others more most only both few
either neither again while until because between through during without within upon via per like let
lets go goes going get gets make makes made want wants need needs one two three four five six seven
eight nine ten hundred zero 0 s t d ll m re ve o y e g ie eg etc vs im youre dont doesnt cant wont
isnt arent really much many well yes ok okay
"""
