"""Event-time detection: batch boundaries never change what is flagged, or when."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import schema as s
from detector.engine import MODEL_FEATURES, DetectionEngine, DetectorConfig, Flag
from detector.model import AccountEnsemble
from detector.partition import KEY, TEXT
from detector.rings import candidate_rings
from detector.state import fold_key
from features import synchrony as sy


def _as_events(df: pl.DataFrame) -> pl.DataFrame:
    """Rows of some event columns as a contract frame: every column, in order and type, ms timestamps."""
    df = df.with_columns(pl.col(s.TS).dt.cast_time_unit("ms"))
    missing = [pl.lit(None, dtype=dt).alias(c) for c, dt in s.EVENT_SCHEMA.items() if c not in df.columns]
    return df.with_columns(missing).select([pl.col(c).cast(dt) for c, dt in s.EVENT_SCHEMA.items()])


def small_population(seed: int = 0) -> pl.DataFrame:
    """120 human-ish accounts and a 12-account ring sharing a /24, a user agent and a steady cadence."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    rows: dict[str, list[object]] = {
        c: []
        for c in (
            "event_id",
            "ts",
            "account_id",
            "ip",
            "user_agent",
            "model",
            "endpoint",
            "prompt_tokens",
            "completion_tokens",
            "status",
            "prompt",
        )
    }
    words = [
        "garden",
        "river",
        "budget",
        "poem",
        "email",
        "recipe",
        "travel",
        "history",
        "physics",
        "guitar",
        "resume",
        "birthday",
        "weather",
        "movie",
        "novel",
        "tax",
        "dog",
        "coffee",
        "painting",
        "chess",
    ]
    n = 0
    for a in range(120):
        k = int(rng.integers(6, 40))
        offsets = np.sort(rng.uniform(0, 16 * 3600, k))
        for off in offsets:
            rows["event_id"].append(f"e{n}")
            n += 1
            rows["ts"].append(start + timedelta(seconds=float(off)))
            rows["account_id"].append(f"user{a:03d}")
            rows["ip"].append(f"198.51.{a % 250}.{int(rng.integers(1, 250))}")
            rows["user_agent"].append(["Mozilla/5.0", "python-requests/2.31", "sdk-js/4"][a % 3])
            rows["model"].append("m-large")
            rows["endpoint"].append("/v1/messages")
            rows["prompt_tokens"].append(int(rng.integers(5, 400)))
            rows["completion_tokens"].append(int(rng.integers(20, 800)))
            rows["status"].append(200 if rng.random() > 0.02 else 500)
            picked = rng.choice(words, size=4, replace=False)
            rows["prompt"].append(f"tell me about {picked[0]} and {picked[1]} for my {picked[2]} {picked[3]}")
    for a in range(12):
        t = start + timedelta(hours=2, seconds=int(a * 7))
        for _ in range(150):
            rows["event_id"].append(f"e{n}")
            n += 1
            rows["ts"].append(t)
            t += timedelta(seconds=300)
            rows["account_id"].append(f"ring{a:02d}")
            rows["ip"].append(f"203.0.113.{int(rng.integers(1, 250))}")
            rows["user_agent"].append("harvester/1.0")
            rows["model"].append("m-large")
            rows["endpoint"].append("/v1/messages")
            rows["prompt_tokens"].append(60)
            rows["completion_tokens"].append(2000)
            rows["status"].append(200)
            q = int(rng.integers(0, 10_000))
            rows["prompt"].append(
                f"Think step by step and show all of your reasoning before the final answer: problem {q}"
            )
    return _as_events(pl.DataFrame(rows)).sort(s.TS)


EVENTS = small_population()
CONFIG = DetectorConfig(every="15m", min_population=60)


def run(batches: list[pl.DataFrame]) -> DetectionEngine:
    engine = DetectionEngine(CONFIG)
    for b in batches:
        engine.ingest(b)
    engine.flush()
    return engine


def flags_of(engine: DetectionEngine) -> dict[str, tuple[datetime, str | None, float]]:
    return {a: (f.first_flagged_ts, f.ring_id, round(f.score, 9)) for a, f in engine.flags.items()}


def windows_of(engine: DetectionEngine) -> dict[str, int]:
    """Every account's activity mask as of the engine's last tick."""
    index = engine.account_index.lookup(EVENTS.get_column(s.ACCOUNT_ID))
    masks = engine.activity.at(index.get_column("account_idx").to_numpy(), sy.tick_number(engine.last_tick, STEP))
    return dict(zip(index.get_column(s.ACCOUNT_ID).to_list(), masks.tolist(), strict=True))


ONE_PASS = run([EVENTS])
STEP = timedelta(minutes=15)


def test_planted_ring_is_flagged_as_one_ring_and_humans_are_not() -> None:
    flagged = set(ONE_PASS.flags)
    ring = {f"ring{a:02d}" for a in range(12)}
    assert ring <= flagged
    assert len(flagged - ring) <= 2
    assert len({ONE_PASS.flags[a].ring_id for a in ring}) == 1


def test_ring_evidence_states_the_synchrony_of_its_members() -> None:
    ring = ONE_PASS.rings[ONE_PASS.flags["ring00"].ring_id]
    line = next(e for e in ring.evidence if e.startswith("synchrony of members"))
    # the planted ring runs on one clock: every pair active in common windows, unlike random pairs
    assert "100% of member pairs were active in a common 15-minute window" in line
    assert "act in step" in line


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=EVENTS.height - 1), min_size=1, max_size=6, unique=True))
def test_batch_boundaries_do_not_change_flags(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), EVENTS.height]
    batches = [EVENTS.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    engine = run(batches)
    assert flags_of(engine) == flags_of(ONE_PASS)
    assert engine.volume_state.sort(s.ACCOUNT_ID).equals(ONE_PASS.volume_state.sort(s.ACCOUNT_ID))
    assert engine.key_examples == ONE_PASS.key_examples
    assert windows_of(engine) == windows_of(ONE_PASS)


def test_ring_evidence_quotes_the_shared_wrapper() -> None:
    (ring,) = [r for r in ONE_PASS.rings.values() if "ring00" in r.members]
    templates = [e for e in ring.evidence if e.startswith("shared prompt templates")]
    assert templates, ring.evidence
    # an analyst sees the harvester's wrapper, not only a hash of it
    assert 'e.g. "Think step by step and show all of your reasoning before the final answer: problem ' in templates[0]
    # examples are kept for the wrappers of capability-targeted accounts, not for everyone's prompts
    assert not any("tell me about" in text for text in ONE_PASS.key_examples.values())


def test_key_examples_are_bounded() -> None:
    engine = DetectionEngine(replace(CONFIG, max_key_examples=4))
    engine.ingest(EVENTS)
    engine.flush()
    assert 0 < len(engine.key_examples) <= 4
    # the most widely held keys keep their examples, each example where its key says
    assert all(engine.key_examples[k] == ONE_PASS.key_examples[k] for k in engine.key_examples)


def test_activity_windows_equal_one_pass_over_the_events() -> None:
    # every event is processed at the first tick boundary after it (the file is in order)
    ticked = EVENTS.with_columns((pl.col(s.TS).dt.truncate("15m") + STEP).alias("_tick"))
    want = dict(sy.active_windows(ticked.lazy(), at=ONE_PASS.last_tick, step=STEP, tick="_tick").collect().iter_rows())
    got = windows_of(ONE_PASS)
    assert {a: w for a, w in got.items() if w} == want
    # the humans' 16 hours fill the masks' 64 ticks: not a test of empty masks
    assert sum(bin(w).count("1") for w in want.values()) > 1000


def test_a_late_event_counts_in_the_tick_that_takes_it() -> None:
    engine = DetectionEngine(CONFIG)
    head = EVENTS.filter(pl.col(s.TS) < EVENTS.get_column(s.TS).min() + timedelta(hours=3))
    engine.ingest(head)
    engine.flush()
    last = engine.last_tick
    # user000 sends one more request stamped two hours back, after those ticks ran
    late = (
        head.filter(pl.col(s.ACCOUNT_ID) == "user000")
        .head(1)
        .with_columns(
            pl.lit("late-1").alias(s.EVENT_ID), pl.lit(last - timedelta(hours=2), dtype=s.TS_DTYPE).alias(s.TS)
        )
    )
    before = windows_of(engine)["user000"]
    engine.ingest(late)
    engine.flush()
    assert engine.last_tick == last + STEP
    # aged by one tick, and active in the tick that took the late event (not two hours back)
    assert windows_of(engine)["user000"] == (before << 1) | 1


def test_redelivered_events_are_counted_once() -> None:
    # redeliveries arrive near the live edge, within the engine's dedupe horizon
    tail = EVENTS.slice(EVENTS.height - 500, 500)
    engine = run([EVENTS.slice(0, EVENTS.height - 100), tail, EVENTS.slice(EVENTS.height - 100, 100), tail.head(10)])
    assert engine.duplicates == 400 + 100 + 10
    assert engine.volume_state.get_column("n_events").sum() == EVENTS.height
    assert flags_of(engine) == flags_of(ONE_PASS)


def test_shared_value_of_a_large_population_links_nobody() -> None:
    # 200 accounts behind one NAT address, 3 of them suspicious: the address is not evidence
    links = pl.DataFrame(
        {"account_id": [f"s{i}" for i in range(200)], "dim": ["ip"] * 200, "value": ["192.0.2.1"] * 200}
    )
    members, _ = candidate_rings(links, pl.Series(["s1", "s2", "s3"]), min_size=3)
    assert members.height == 0
    members, evidence = candidate_rings(links.head(4), pl.Series(["s0", "s1", "s2"]), min_size=3, min_degree=1)
    assert sorted(members.get_column("account_id").to_list()) == ["s0", "s1", "s2"]
    assert evidence.get_column("value").to_list() == ["192.0.2.1"]


def test_one_coincidental_shared_value_is_not_a_ring() -> None:
    ids = ["s0", "s1", "s2", "s3"]
    one = pl.DataFrame({"account_id": ids, "dim": ["ip"] * 4, "value": ["192.0.2.1"] * 4})
    assert candidate_rings(one, pl.Series(ids), min_size=3)[0].height == 0
    two = pl.concat([one, one.with_columns(pl.lit("user_agent").alias("dim"), pl.lit("harvester/1").alias("value"))])
    assert candidate_rings(two, pl.Series(ids), min_size=3)[0].height == 4


def test_one_call_over_many_ticks_decides_as_the_ticks_one_at_a_time() -> None:
    from detector.publisher import changed_decisions, tick_decisions

    # the ring recruits six more accounts six hours in: decisions at more than one tick
    late = EVENTS.filter(pl.col(s.ACCOUNT_ID).is_in([f"ring{a:02d}" for a in range(6)])).with_columns(
        pl.col(s.ACCOUNT_ID).str.replace("ring", "late"),
        ("late-" + pl.col(s.EVENT_ID)).alias(s.EVENT_ID),
        pl.col(s.TS) + timedelta(hours=6),
    )
    events = pl.concat([EVENTS, late]).sort(s.TS)
    # one tick at a time, publishing every flag whose action changed after each tick (the old loop)
    engine = DetectionEngine(CONFIG)
    engine.ingest(events, watermark=datetime(1970, 1, 1, tzinfo=UTC))
    stepwise: list[object] = []
    published: dict[str, str] = {}
    while engine.next_tick is not None and engine.next_tick <= events.get_column(s.TS).max():
        tick = engine.next_tick
        engine.ingest(events.clear(), watermark=tick)
        stepwise.extend(changed_decisions(engine.flags, published, decided_at=tick))
    together = DetectionEngine(CONFIG)
    outcomes = together.ingest(events)
    assert len(outcomes) > 10
    decisions = tick_decisions(outcomes, {})
    assert decisions == stepwise
    # the ring is blocked, its members as they join it: decisions at several ticks, each at its own
    assert {d.action for d in decisions} >= {"block"}
    assert len({d.decided_at for d in decisions}) >= 2


def test_a_ring_that_splits_keeps_its_id_on_its_larger_piece() -> None:
    from detector.engine import Flag

    engine = DetectionEngine(CONFIG)
    t = datetime(2026, 5, 1, tzinfo=UTC)
    accounts = [f"m{i}" for i in range(7)]
    for a in accounts:
        engine.flags[a] = Flag(a, t, 0.9, t, ring_id="r-old")
    taken: set[str] = set()
    larger = engine._ring_identity(accounts[:4], taken=taken)
    taken.add(larger)
    smaller = engine._ring_identity(accounts[4:], taken=taken)
    assert larger == "r-old"
    assert smaller not in {"r-old", larger}
    # the same piece asks again next tick: the same new id (its lowest member's)
    assert engine._ring_identity(accounts[4:], taken={"r-old"}) == smaller


def test_an_account_flagged_on_its_own_again_after_release_is_throttled_again() -> None:
    # seen on a replay: a benchmark harness released at 10:15 and solo again at 14:15 kept `allow`,
    # so the report said flagged while the gateway was told to let it through
    tick = datetime(2026, 5, 1, 6, 15, tzinfo=UTC)
    flag = Flag("acct", tick, 0.99, tick, solo=True)
    flag.solo, flag.active, flag.action = False, False, "allow"  # released
    flag.mark_solo()
    assert (flag.solo, flag.active, flag.action) == (True, True, "throttle")
    member = Flag("m", tick, 0.99, tick, ring_id="r-1", action="block")
    member.mark_solo()
    assert (member.solo, member.action) == (True, "block")


def test_a_ring_member_no_longer_flagged_on_its_own_keeps_its_rings_action() -> None:
    tick = datetime(2026, 5, 1, 6, 15, tzinfo=UTC)
    member = Flag("m", tick, 0.99, tick, ring_id="r-1", action="block", solo=True)
    member.release_solo()
    # it was downgraded to throttle until the next linking pass set the ring's action again
    assert (member.solo, member.active, member.action) == (False, True, "block")
    alone = Flag("a", tick, 0.99, tick, solo=True)
    alone.release_solo()
    assert (alone.solo, alone.active, alone.action) == (False, False, "allow")


def _solo_scoring_engine() -> tuple[DetectionEngine, pl.DataFrame]:
    """An engine with a fitted model and the feature row of one busy, wrapped, targeted account."""
    from features import prompts as pr
    from features import volume as v

    engine = DetectionEngine(CONFIG)
    X = np.random.default_rng(0).lognormal(size=(300, len(MODEL_FEATURES)))
    engine.model = AccountEnsemble(features=MODEL_FEATURES).fit(X)
    row = pl.DataFrame({name: [float(X[:, j].max() * 10)] for j, name in enumerate(MODEL_FEATURES)}).with_columns(
        pl.lit("harness").alias(s.ACCOUNT_ID),
        pl.lit(500).alias(v.N_EVENTS),
        pl.lit(1.0).alias(pr.TARGETED_SHARE),
        pl.lit(1.0).alias(pr.TOP_TEMPLATE_SHARE),
        pl.lit(200).alias(pr.N_PROMPTS),
    )
    return engine, row


def test_scoring_throttles_a_released_account_flagged_on_its_own_again() -> None:
    engine, row = _solo_scoring_engine()
    active = row.get_column(s.ACCOUNT_ID)
    t0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
    engine._score(t0, row, active=active, scores=np.array([0.999]))
    flag = engine.flags["harness"]
    assert (flag.solo, flag.active, flag.action) == (True, True, "throttle")
    engine._score(t0 + STEP, row, active=active, scores=np.array([0.2]))
    assert (flag.solo, flag.active, flag.action) == (False, False, "allow")
    changed = engine._score(t0 + 2 * STEP, row, active=active, scores=np.array([0.999]))
    assert flag in changed
    # seed 3033: solo again, it kept the 'allow' of its release, reported flagged while let through
    assert (flag.solo, flag.active, flag.action) == (True, True, "throttle")


def test_scoring_leaves_a_ring_members_action_when_its_solo_evidence_fades() -> None:
    engine, row = _solo_scoring_engine()
    active = row.get_column(s.ACCOUNT_ID)
    t0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
    engine._score(t0, row, active=active, scores=np.array([0.999]))
    flag = engine.flags["harness"]
    flag.ring_id, flag.action = "ring-1", "block"  # as a linking pass sets it
    engine._score(t0 + STEP, row, active=active, scores=np.array([0.2]))
    # it was downgraded to throttle until the next linking pass set the ring's action again
    assert (flag.solo, flag.active, flag.ring_id, flag.action) == (False, True, "ring-1", "block")


def _request(
    event_id: str, ts: datetime, account: str, text: str, *, ip: str, user_agent: str, tokens: tuple[int, int]
) -> dict[str, object]:
    """One successful request row (prompt and completion `tokens`) to the large model."""
    return {
        s.EVENT_ID: event_id,
        s.TS: ts,
        s.ACCOUNT_ID: account,
        s.IP: ip,
        s.USER_AGENT: user_agent,
        s.MODEL: "m-large",
        s.ENDPOINT: "/v1/messages",
        s.PROMPT_TOKENS: tokens[0],
        s.COMPLETION_TOKENS: tokens[1],
        s.STATUS: 200,
        s.PROMPT: text,
    }


def _accounts_like_the_ring(
    prefix: str,
    *,
    n: int,
    texts: list[list[str]] | Callable[[int], list[list[str]]],
    start: datetime,
    every: timedelta,
    spacing: int = 4,
) -> pl.DataFrame:
    """`n` accounts on the planted ring's network and client, each sending `texts[k]` (account a's: `texts(a)[k]`)
    from start + k * every on, one every `spacing` seconds."""
    rng = np.random.default_rng(7)
    rows = []
    for a in range(n):
        for k, burst in enumerate(texts(a) if callable(texts) else texts):
            t0 = start + k * every + timedelta(seconds=11 * a)
            for j, text in enumerate(burst):
                rows.append(
                    _request(
                        f"{prefix}{a}-{k}-{j}",
                        t0 + timedelta(seconds=spacing * j),
                        f"{prefix}{a:02d}",
                        text,
                        ip=f"203.0.113.{int(rng.integers(1, 250))}",
                        user_agent="harvester/1.0",
                        tokens=(60, 2000),
                    )
                )
    return _as_events(pl.DataFrame(rows))


def test_accounts_re_running_a_dataset_of_known_texts_are_not_flagged() -> None:
    # a benchmark lab's harnesses on one network and client, each running the same 60 public
    # problems twice (pass@2) in its first run and once more every hour: their texts are known to
    # the platform (answered twice, then answered in earlier ticks); a harvester's are fresh
    wrapper = "Think step by step and show all of your reasoning before the final answer"
    dataset = [f"{wrapper}: problem {i}" for i in range(60)]
    start = datetime(2026, 5, 1, 3, tzinfo=UTC)
    harness = _accounts_like_the_ring(
        "bench", n=6, texts=[dataset + dataset, *[dataset] * 5], start=start, every=timedelta(hours=1)
    )
    events = pl.concat([EVENTS.filter(~pl.col(s.ACCOUNT_ID).str.starts_with("ring")), harness]).sort(s.TS)
    on = DetectionEngine(CONFIG)
    on.ingest(events)
    on.flush()
    off = DetectionEngine(replace(CONFIG, known_text_share=None))
    off.ingest(events)
    off.flush()
    bench = {f"bench{a:02d}" for a in range(6)}
    # without the signal the harnesses are a ring (shared network, client and wrapper, targeted prompts)
    assert bench <= set(off.flags)
    assert not bench & set(on.flags)
    sent, known = on.novelty.of(on.account_index.lookup(pl.Series(sorted(bench))).get_column("account_idx").to_numpy())
    assert (sent == 60 * 6).all() and (known == sent).all()
    # the planted ring's fresh questions are new to the platform: it is flagged as before
    assert {f"ring{a:02d}" for a in range(12)} <= set(ONE_PASS.flags)
    ring = ONE_PASS.account_index.lookup(pl.Series([f"ring{a:02d}" for a in range(12)]))
    sent, known = ONE_PASS.novelty.of(ring.get_column("account_idx").to_numpy())
    assert CONFIG.known_text_share is not None
    # (a few of its 1,800 random problem numbers repeat: well below the share that marks a re-run)
    assert (sent >= 140).all() and (known < 0.5 * CONFIG.known_text_share * sent).all()


WRAPPER = "Think step by step and show all of your reasoning before the final answer"
# the re-send rule (known: answered before by anyone, or twice in a tick) and the public rule (known:
# sent by 5 ordinary customers besides the account's own)
RESEND, PUBLIC = replace(CONFIG, public_text_senders=None), replace(CONFIG, public_text_senders=5)
HUMANS = EVENTS.filter(~pl.col(s.ACCOUNT_ID).str.starts_with("ring"))


def _replayed(config: DetectorConfig, events: pl.DataFrame) -> DetectionEngine:
    engine = DetectionEngine(config)
    engine.ingest(events.sort(s.TS))
    engine.flush()
    return engine


def _known(engine: DetectionEngine, accounts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(texts sent, texts known) of `accounts`."""
    return engine.novelty.of(engine.account_index.lookup(pl.Series(accounts)).get_column("account_idx").to_numpy())


def _evasion(mode: str, n: int) -> Callable[[int], list[list[str]]]:
    """Six hourly bursts of 60 fresh questions per account, re-sent so the re-send rule counts them known."""

    def fresh(a: int, k: int, m: int = 60) -> list[str]:
        return [f"{WRAPPER}: problem {a}-{k}-{i}" for i in range(m)]

    def bursts(a: int) -> list[list[str]]:
        if mode == "pass@2":  # every question sampled twice
            return [[q for q in fresh(a, k) for _ in range(2)] for k in range(6)]
        if mode == "a quarter re-sent":  # 20 of every 60 questions sent again (a quarter of its requests)
            return [fresh(a, k) + fresh(a, k)[:20] for k in range(6)]
        # ring mates: 15 of each burst's 60 are the questions the next member asked an hour before
        first = fresh(a, 0) + fresh(a, 0)[:20]
        return [first, *[fresh(a, k, 45) + fresh((a + 1) % n, k - 1, 45)[:15] for k in range(1, 6)]]

    return bursts


@pytest.mark.parametrize("mode", ["pass@2", "a quarter re-sent", "ring mates"])
def test_a_ring_re_sending_its_own_or_its_mates_questions_is_still_flagged(mode: str) -> None:
    # six harvesters on the planted ring's network and client asking fresh questions in its wrapper,
    # re-sent so that the re-send rule takes them for a harness re-running a dataset (the evasion)
    ring = [f"evade{a:02d}" for a in range(6)]
    evaders = _accounts_like_the_ring(
        "evade", n=6, texts=_evasion(mode, 6), start=datetime(2026, 5, 1, 3, tzinfo=UTC), every=timedelta(hours=1)
    )
    events = pl.concat([HUMANS, evaders])
    resend = _replayed(RESEND, events)
    assert not set(ring) & set(resend.flags)
    sent, known = _known(resend, ring)
    assert CONFIG.known_text_share is not None and (known >= CONFIG.known_text_share * sent).all()
    # none of their texts is public: neither their own re-sends nor their mates' (harvesters, not ordinary)
    public = _replayed(PUBLIC, events)
    sent, known = _known(public, ring)
    assert (sent >= 300).all() and (known == 0).all()
    assert set(ring) <= set(public.flags)
    assert all(public.flags[a].ring_id is not None for a in ring)


def _fans(n: int, dataset: list[str]) -> pl.DataFrame:
    """`n` ordinary users on their own networks: 20 chats in the first hour, then 9 items of `dataset` each
    (each item sent by 6 of them when n = 40), from 01:00."""
    start = datetime(2026, 5, 1, tzinfo=UTC)
    rows = []
    for u in range(n):
        chats = [f"tell me about {w} for my {u}" for w in ("garden", "river", "budget", "poem", "recipe") * 4]
        items = [dataset[(u * 9 + j) % len(dataset)] for j in range(9)]
        times = [start + timedelta(minutes=3 * i, seconds=u) for i in range(20)]
        times += [start + timedelta(hours=1, minutes=10 * j, seconds=u) for j in range(9)]
        for i, (t, text) in enumerate(zip(times, chats + items, strict=True)):
            rows.append(
                _request(
                    f"fan{u}-{i}",
                    t,
                    f"fan{u:03d}",
                    text,
                    ip=f"192.0.{u}.{10 + u % 200}",
                    user_agent="Mozilla/5.0",
                    tokens=(40, 300),
                )
            )
    return _as_events(pl.DataFrame(rows))


def test_a_harness_re_running_a_public_dataset_many_ordinary_users_send_is_not_flagged() -> None:
    # the benchmark lab of the test above, on one network and client, but its dataset is public:
    # 40 ordinary users (each on its own network) sent its items too, each item 6 of them
    dataset = [f"{WRAPPER}: problem {i}" for i in range(60)]
    lab = [f"bench{a:02d}" for a in range(6)]
    harness = _accounts_like_the_ring(
        "bench",
        n=6,
        texts=[dataset + dataset, *[dataset] * 5],
        start=datetime(2026, 5, 1, 3, tzinfo=UTC),
        every=timedelta(hours=1),
    )
    public = _replayed(PUBLIC, pl.concat([HUMANS, _fans(40, dataset), harness]))
    assert not set(lab) & set(public.flags)
    sent, known = _known(public, lab)
    assert (sent == 60 * 6).all() and (known == sent).all()
    # without the fans the lab earns nothing by its own re-runs (its accounts are one network, a ring)
    private = _replayed(PUBLIC, pl.concat([HUMANS, harness]))
    assert set(lab) <= set(private.flags)
    assert (_known(private, lab)[1] == 0).all()


def test_a_harness_re_running_a_dataset_of_the_public_list_is_not_flagged(tmp_path: Path) -> None:
    # the lab without fans (flagged under the public rule above), its dataset in the list of public texts
    dataset = [f"{WRAPPER}: problem {i}" for i in range(60)]
    listed = tmp_path / "public.jsonl"
    pl.DataFrame({"text": dataset}).write_ndjson(listed)
    harness = _accounts_like_the_ring(
        "bench",
        n=6,
        texts=[dataset + dataset, *[dataset] * 5],
        start=datetime(2026, 5, 1, 3, tzinfo=UTC),
        every=timedelta(hours=1),
    )
    engine = _replayed(replace(PUBLIC, public_texts=listed), pl.concat([HUMANS, harness]))
    lab = [f"bench{a:02d}" for a in range(6)]
    assert not set(lab) & set(engine.flags)
    sent, known = _known(engine, lab)
    assert (sent == 60 * 6).all() and (known == sent).all()


def test_the_public_rule_decides_the_same_whatever_the_batch_boundaries() -> None:
    # a three-hour horizon: the texts' generations turn over during the stream (the fans' items of
    # 01:00-02:30 are public to the lab's runs of 03:00-05:00, forgotten by its run of 06:00)
    config = replace(PUBLIC, known_text_horizon=timedelta(hours=3))
    dataset = [f"{WRAPPER}: problem {i}" for i in range(60)]
    harness = _accounts_like_the_ring(
        "bench",
        n=6,
        texts=[dataset, *[dataset] * 3],
        start=datetime(2026, 5, 1, 3, tzinfo=UTC),
        every=timedelta(hours=1),
    )
    events = pl.concat([EVENTS, _fans(40, dataset), harness]).sort(s.TS)
    one = _replayed(config, events)
    batched = DetectionEngine(config)
    for lo, hi in itertools.pairwise([0, 1_000, events.height // 2, events.height - 7, events.height]):
        batched.ingest(events.slice(lo, hi - lo))
    batched.flush()
    assert flags_of(batched) == flags_of(one)
    accounts = sorted(set(events.get_column(s.ACCOUNT_ID).to_list()))
    assert all((x == y).all() for x, y in zip(_known(one, accounts), _known(batched, accounts), strict=True))
    sent, known = _known(one, [f"bench{a:02d}" for a in range(6)])
    assert (sent == 4 * 60).all() and (known == 3 * 60).all()


def test_an_anomalous_account_with_few_targeted_prompts_is_no_ring_member() -> None:
    # a heavy human on the ring's network and client (a popular proxy, a popular SDK), busy enough
    # to be anomalous, whose many prompts are ordinary questions: it shares the ring's values, but
    # clearly is not harvesting
    # (busy since before the ring started: by then its sampled prompts say what it asks about)
    chatter = [f"tell me about the weather and my garden for day {i} of the trip" for i in range(600)]
    human = _accounts_like_the_ring(
        "busy", n=1, texts=[chatter], start=datetime(2026, 5, 1, tzinfo=UTC), every=STEP, spacing=24
    )
    events = pl.concat([EVENTS, human]).sort(s.TS)
    off = DetectionEngine(replace(CONFIG, member_min_targeted=None))
    off.ingest(events)
    off.flush()
    on = DetectionEngine(CONFIG)
    on.ingest(events)
    on.flush()
    assert "busy00" in off.flags and off.flags["busy00"].ring_id is not None
    assert "busy00" not in on.flags
    assert {f"ring{a:02d}" for a in range(12)} <= set(on.flags)


def test_a_batch_job_on_the_ring_network_whose_few_sampled_prompts_target_nothing_is_no_ring_member() -> None:
    # an enterprise batch job on the ring's cloud network and client (seed 4848): three accounts
    # classifying reviews in one 20-minute burst, anomalous by volume, linked to the ring by its
    # network and client. Two ticks sample 12 of their prompts, none targeted: 0.55^12 = 0.0008 of a
    # harvester whose share is 45%, though a share bound of 2/sqrt(12) (0.58) would keep them
    reviews = [
        f"Classify the sentiment of this customer review as positive, neutral or negative. Review {i}: "
        f"the parcel came {['late', 'early', 'damaged'][i % 3]} and the {['lid', 'strap', 'case'][i % 7 % 3]} was fine"
        for i in range(300)
    ]
    batch = _accounts_like_the_ring(
        "batch", n=3, texts=[reviews], start=datetime(2026, 5, 1, 4, tzinfo=UTC), every=STEP
    )
    events = pl.concat([EVENTS, batch]).sort(s.TS)
    job = {f"batch{a:02d}" for a in range(3)}
    # as wide as the 2/sqrt(n) bound was at a 45% floor (four standard deviations)
    wide = _replayed(replace(CONFIG, member_share_alpha=3e-5, member_new_alpha=3e-5), events)
    assert job <= {a for a, f in wide.flags.items() if f.ring_id is not None}
    exact = _replayed(CONFIG, events)
    assert not job & set(exact.flags)
    assert {f"ring{a:02d}" for a in range(12)} <= set(exact.flags)


def test_the_not_harvesting_test_is_exact_for_few_prompts_and_stricter_for_a_new_candidate() -> None:
    # binomial lower tails at a 45% share: none of 6 targeted 0.028, one of 6 0.164, none of 12 0.0008
    engine = DetectionEngine(CONFIG)
    rows = {
        "new_none_of_6": (6, 0.0),
        "new_one_of_6": (6, 1 / 6),
        "new_half_of_6": (6, 0.5),
        "held_none_of_6": (6, 0.0),
        "held_none_of_12": (12, 0.0),
    }
    engine.prompt_summary = pl.DataFrame(
        {
            s.ACCOUNT_ID: list(rows),
            "n_prompts": [n for n, _ in rows.values()],
            "targeted_share": [share for _, share in rows.values()],
        },
        schema=engine.prompt_summary.schema,
    )
    tick = datetime(2026, 5, 1, tzinfo=UTC)
    engine.flags = {a: Flag(a, tick, 0.95, tick) for a in ("held_none_of_6", "held_none_of_12")}
    kept = engine._harvesting(pl.Series(s.ACCOUNT_ID, [*rows, "no_prompts"]))
    # a new candidate is kept out at 5%, a flag dropped (the member released) only at 0.1%
    assert kept.to_list() == ["new_one_of_6", "new_half_of_6", "held_none_of_6", "no_prompts"]


def _app_traffic(*, users: int, heavy: int, start: datetime) -> pl.DataFrame:
    """An IDE app's users: each wraps its question in the app's prompt, from its own address and network.

    `users` send one question early in the day; `heavy` more send eight coding questions each from
    two hours later, reusing the app's wrapper (recurring keys) with mostly capability-targeted prompts.
    """
    wrapper = "You are DevPilot, the assistant inside the Nimbus IDE. Keep answers short and cite the open file"
    tasks = [
        "parse a csv file",
        "merge two sorted lists",
        "reverse a linked list",
        "validate an email address",
        "compute a moving average",
        "debounce a callback",
        "flatten a nested dict",
        "retry an http call",
    ]
    rows = []
    plan = [(f"app{u:02d}", start + timedelta(minutes=2 * u), [tasks[u % 8]]) for u in range(users)]
    plan += [(f"dev{u:02d}", start + timedelta(hours=2, minutes=5 * u), tasks) for u in range(heavy)]
    for n, (account, t0, asked) in enumerate(plan):
        for j, task in enumerate(asked):
            rows.append(
                {
                    s.EVENT_ID: f"{account}-{j}",
                    s.TS: t0 + timedelta(minutes=7 * j),
                    s.ACCOUNT_ID: account,
                    s.IP: f"100.{64 + n}.{j}.7",
                    s.USER_AGENT: "DevPilot/2.1",
                    s.MODEL: "m-large",
                    s.ENDPOINT: "/v1/messages",
                    s.PROMPT_TOKENS: 300,
                    s.COMPLETION_TOKENS: 500,
                    s.STATUS: 200,
                    s.PROMPT: f"{wrapper}.\n\nWrite a Python function to {task}, version {n}.{j}",
                }
            )
    return _as_events(pl.DataFrame(rows))


def test_a_wrapper_many_accounts_used_once_links_nobody_however_few_reuse_it() -> None:
    # (an option, off by default: it costs evasive rings their evidence) forty users sent the
    # app's wrapper once each; three heavy coding users reuse it: the
    # only value the three share is the app's wrapper, which most of its holders (all who used
    # it, not only the three who reuse it) are no candidates for: a popular value, no ring
    events = pl.concat([EVENTS, _app_traffic(users=40, heavy=3, start=datetime(2026, 5, 1, tzinfo=UTC))]).sort(s.TS)
    devs = {f"dev{u:02d}" for u in range(3)}
    off = DetectionEngine(replace(CONFIG, key_popularity_all_holders=False))
    off.ingest(events)
    off.flush()
    on = DetectionEngine(replace(CONFIG, key_popularity_all_holders=True))
    on.ingest(events)
    on.flush()
    # and by default too: the app's wrapper is one phrasing, its 8 band keys one value, not two
    assert not devs & set(off.flags)
    assert not devs & set(on.flags)
    assert {f"ring{a:02d}" for a in range(12)} <= set(on.flags)
    assert {f"ring{a:02d}" for a in range(12)} <= set(off.flags)


def test_candidacy_onset_is_concerted_only_lately_and_after_a_past() -> None:
    # the concerted-onset links' material: when each young targeted account became a candidate,
    # and whether it had been active early_onset_history ticks before (an aged account switching)
    engine = DetectionEngine(CONFIG)
    start = datetime(2026, 5, 1, 12, tzinfo=UTC)
    now = sy.tick_number(start, STEP)
    index = engine.account_index.lookup(pl.Series(s.ACCOUNT_ID, ["aged", "fresh", "late"]))
    idx = dict(zip(index.get_column(s.ACCOUNT_ID).to_list(), index.get_column("account_idx").to_list(), strict=True))
    history = CONFIG.early_onset_history
    # "aged" was active long before; "fresh" only in the last few ticks (a new account)
    engine.activity.mark(np.array([idx["aged"]]), now - history - 2)
    engine.activity.mark(np.array([idx["aged"], idx["fresh"]]), now - 1)
    engine.activity.mark(np.array([idx["aged"], idx["fresh"]]), now)
    engine.last_tick = start
    candidates = index.filter(pl.col(s.ACCOUNT_ID) != "late")
    assert engine._concerted(candidates).to_list() == ["aged"]
    # within early_onset_ticks the onset still counts; seen again, an onset is not reset
    engine.last_tick = start + STEP * (CONFIG.early_onset_ticks - 1)
    assert engine._concerted(candidates).to_list() == ["aged"]
    engine.last_tick = start + STEP * CONFIG.early_onset_ticks
    engine.activity.mark(np.array([idx["late"]]), sy.tick_number(engine.last_tick, STEP))
    assert engine._concerted(index).to_list() == []


def test_a_recent_onset_without_a_past_is_a_recruit() -> None:
    # the recruits of the concerted-onset rule: a young targeted account whose candidacy began lately
    # with no activity early_onset_history ticks before (DetectorConfig.early_onset_recruit_keys)
    engine = DetectionEngine(CONFIG)
    start = datetime(2026, 5, 1, 12, tzinfo=UTC)
    now = sy.tick_number(start, STEP)
    index = engine.account_index.lookup(pl.Series(s.ACCOUNT_ID, ["aged", "fresh"]))
    idx = dict(zip(index.get_column(s.ACCOUNT_ID).to_list(), index.get_column("account_idx").to_list(), strict=True))
    engine.activity.mark(np.array([idx["aged"]]), now - CONFIG.early_onset_history - 2)
    engine.activity.mark(np.array([idx["aged"], idx["fresh"]]), now)
    engine.last_tick = start
    assert engine._concerted(index).to_list() == ["aged"]
    assert engine._concerted(index, with_past=False).to_list() == ["fresh"]
    # the onset noted once: still a recruit within early_onset_ticks, no longer after
    engine.last_tick = start + STEP * (CONFIG.early_onset_ticks - 1)
    assert engine._concerted(index, with_past=False).to_list() == ["fresh"]
    engine.last_tick = start + STEP * CONFIG.early_onset_ticks
    assert engine._concerted(index, with_past=False).to_list() == []


def test_young_phrases_are_the_rare_ones_young_candidates_share() -> None:
    # concerted phrase links' material: a phrase two young accounts used, most of whose holders are
    # young (a ring's wrapper clause), not one an app's many users send; a text two of them sent
    engine = DetectionEngine(CONFIG)
    users = [f"user{i}" for i in range(4)]
    rows = [
        ("y0", 1, 10),
        ("y1", 1, 11),
        ("y0", 2, 10),
        ("y1", 2, 12),
        ("y0", 3, 13),  # y0's alone: says nothing of a pair
        ("y1", 4, 10),  # text 10, sent by both
        *((a, 2, 20 + i) for i, a in enumerate(users)),  # phrase 2: mostly older accounts'
    ]
    # hashes are stored folded to their top bits: spread the small ids over the top of the range
    rows = [(a, k << 40, t << 40) for a, k, t in rows]
    phrases = pl.DataFrame(rows, schema={s.ACCOUNT_ID: pl.String, KEY: pl.UInt64, TEXT: pl.UInt64}, orient="row")
    engine.account_index.lookup(phrases.get_column(s.ACCOUNT_ID).unique(maintain_order=True))
    engine.last_tick = datetime(2026, 5, 1, tzinfo=UTC)  # the tick the phrases are noted at
    engine._note_phrases(phrases)
    young = engine.account_index.lookup(pl.Series(s.ACCOUNT_ID, ["y0", "y1"]))
    held, texts = engine._young_phrases(young, pl.Series(s.ACCOUNT_ID, [], dtype=pl.String))
    assert sorted(held.get_column(s.ACCOUNT_ID).to_list()) == ["y0", "y1"]
    assert held.get_column("value").n_unique() == 1  # phrase 1 only
    assert sorted(texts.get_column(s.ACCOUNT_ID).to_list()) == ["y0", "y1"]
    assert texts.get_column("value").n_unique() == 1  # text 10


def _signups(accounts: list[str], at: datetime) -> pl.DataFrame:
    """Signup account events of `accounts` at `at`, all from one network and one payment instrument."""
    n = len(accounts)
    rows = pl.DataFrame(
        {
            s.ACCOUNT_ID: accounts,
            s.TS: [at] * n,
            s.TYPE: ["signup"] * n,
            s.SIGNUP_IP: [f"192.0.2.{i + 1}" for i in range(n)],
            s.PAYMENT_FINGERPRINT: ["pf-shared"] * n,
        }
    ).with_columns(pl.col(s.TS).dt.cast_time_unit("ms"))
    missing = [pl.lit(None, dtype=dt).alias(c) for c, dt in s.ACCOUNT_EVENT_SCHEMA.items() if c not in rows.columns]
    return rows.with_columns(missing).select([pl.col(c).cast(dt) for c, dt in s.ACCOUNT_EVENT_SCHEMA.items()])


def _account_links_of(engine: DetectionEngine) -> pl.DataFrame:
    from features import volume as v

    return engine.distinct_state.filter(pl.col(v.DIM).is_in(v.ACCOUNT_DIMS)).sort(pl.all())


def test_account_events_link_from_the_first_tick_after_their_ts() -> None:
    start = EVENTS.get_column(s.TS).min()
    assert isinstance(start, datetime)
    humans = [f"user{a:03d}" for a in range(4)]
    # half an hour in: unknown to the ticks before, known to every tick after
    signed_up = start.replace(minute=0, second=0, microsecond=0) + timedelta(minutes=35)
    engine = DetectionEngine(CONFIG)
    engine.add_account_events(_signups(humans, signed_up))
    cut = EVENTS.filter(pl.col(s.TS) < signed_up - timedelta(minutes=5))
    engine.ingest(cut)
    engine.flush()
    assert engine.last_tick is not None and engine.last_tick <= signed_up
    assert _account_links_of(engine).height == 0
    assert engine.pending_links.height == 2 * len(humans)
    engine.ingest(EVENTS.filter(pl.col(s.TS) >= signed_up - timedelta(minutes=5)))
    engine.flush()
    links = _account_links_of(engine)
    assert links.height == 2 * len(humans)
    assert engine.pending_links.height == 0


def test_account_events_decide_the_same_up_front_or_as_they_arrive() -> None:
    ring = [f"ring{a:02d}" for a in range(12)]
    start = EVENTS.get_column(s.TS).min()
    assert isinstance(start, datetime)
    waves = [_signups(ring[:6], start + timedelta(hours=1)), _signups(ring[6:], start + timedelta(hours=3))]
    up_front = DetectionEngine(CONFIG)
    up_front.add_account_events(pl.concat(waves))
    up_front.ingest(EVENTS)
    up_front.flush()
    arriving = DetectionEngine(CONFIG)
    # each wave arrives with the requests of its hour, the second one first (topics are read independently)
    cut = start + timedelta(hours=2)
    arriving.ingest(EVENTS.filter(pl.col(s.TS) < cut), watermark=cut - timedelta(minutes=30))
    arriving.add_account_events(waves[1])
    arriving.add_account_events(waves[0])
    arriving.ingest(EVENTS.filter(pl.col(s.TS) >= cut))
    arriving.flush()
    assert flags_of(arriving) == flags_of(up_front)
    assert _account_links_of(arriving).equals(_account_links_of(up_front))
    assert arriving.distinct_state.sort(pl.all()).equals(up_front.distinct_state.sort(pl.all()))


def _busy_account(account: str, ts: list[datetime], seed: int) -> pl.DataFrame:
    """One account's targeted requests in one suffix template at times `ts`, fresh questions each."""
    rng = np.random.default_rng(seed)
    n = len(ts)
    return _as_events(
        pl.DataFrame(
            {
                s.EVENT_ID: [f"{account}-{i}" for i in range(n)],
                s.TS: ts,
                s.ACCOUNT_ID: [account] * n,
                s.IP: ["203.0.113.77"] * n,
                s.USER_AGENT: ["harness/0.4"] * n,
                s.MODEL: ["m-large"] * n,
                s.ENDPOINT: ["/v1/messages"] * n,
                s.PROMPT_TOKENS: [120] * n,
                s.COMPLETION_TOKENS: [int(x) for x in rng.integers(200, 600, n)],
                s.STATUS: [200] * n,
                s.PROMPT: [
                    f"A farmer has {int(q)} sheep and sells {int(q) % 7} of them. How many are left?\n\n"
                    "Please reason step by step, and put your final answer within \\boxed{}."
                    for q in rng.integers(10, 100_000, n)
                ],
            }
        )
    )


def test_a_harness_sending_as_answers_return_is_not_flagged_alone_a_dispatcher_is() -> None:
    start = EVENTS.get_column(s.TS).min()
    assert isinstance(start, datetime)
    t0 = start + timedelta(hours=3)
    rng = np.random.default_rng(5)
    # a benchmark harness: 8 workers, each sending its next item when the previous answer returns
    harness: list[datetime] = []
    for w in range(8):
        at = t0 + timedelta(milliseconds=50 * w)
        for latency in rng.lognormal(np.log(50.0), 0.6, 32):
            harness.append(at)
            at += timedelta(seconds=float(latency) + 0.03)
    # a harvester's dispatcher: one request every 7 seconds, a fifth of a second of jitter
    dispatcher = [t0 + timedelta(seconds=7 * i + 0.2 * float(rng.uniform(-1, 1))) for i in range(256)]
    events = pl.concat([EVENTS, _busy_account("lab0", harness, 1), _busy_account("bot0", dispatcher, 2)]).sort(s.TS)

    def solo_flags(config: DetectorConfig) -> dict[str, bool]:
        engine = DetectionEngine(config)
        engine.ingest(events)
        engine.flush()
        return {a: f.solo for a, f in engine.flags.items() if a in ("lab0", "bot0")}

    assert solo_flags(CONFIG) == {"bot0": True}
    # the spacing is what tells them apart: without it the harness is flagged too
    assert solo_flags(replace(CONFIG, solo_min_regularity=None)) == {"bot0": True, "lab0": True}


def test_flagged_holders_are_suspicious_but_a_flagged_rings_vocabulary_is_no_evidence() -> None:
    # seed 1303: the evasive members' rare clauses are also the flagged heavy trio's (one capability
    # family), which made them popular; the flagged low-and-slow ring's clauses, shared by most of its
    # members, tied an evasive member to that ring (the fringe rule) instead of to its own
    engine = DetectionEngine(CONFIG)
    rows = [
        *((a, 1, 10 + i) for i, a in enumerate(["y0", "y1", "h0", "h1", "h2", "o0"])),  # 5 of 6 suspicious
        *((a, 2, 20 + i) for i, a in enumerate(["y0", "y1", "f0", "f1", "f2"])),  # 3 of 5 flagged
        *((a, 3, 30 + i) for i, a in enumerate(["y0", "y1", "o0", "o1", "o2"])),  # mostly ordinary
    ]
    rows = [(a, k << 40, t << 40) for a, k, t in rows]
    phrases = pl.DataFrame(rows, schema={s.ACCOUNT_ID: pl.String, KEY: pl.UInt64, TEXT: pl.UInt64}, orient="row")
    engine.account_index.lookup(phrases.get_column(s.ACCOUNT_ID).unique(maintain_order=True))
    engine.last_tick = datetime(2026, 5, 1, tzinfo=UTC)  # the tick the phrases are noted at
    engine._note_phrases(phrases)
    young = engine.account_index.lookup(pl.Series(s.ACCOUNT_ID, ["y0", "y1", "f0", "f1", "f2"]))
    flagged = pl.Series(s.ACCOUNT_ID, ["h0", "h1", "h2", "f0", "f1", "f2"])
    held, _ = engine._young_phrases(young, flagged)
    assert sorted(held.get_column(s.ACCOUNT_ID).to_list()) == ["y0", "y1"]
    assert held.get_column("value").unique().to_list() == [fold_key(np.array([1 << 40], dtype=np.uint64))[0]]


def test_a_ring_member_held_for_hours_keeps_its_flag_while_it_still_harvests(monkeypatch: pytest.MonkeyPatch) -> None:
    # the planted ring is flagged by its links; eight hours in, the linking pass stops tying it (as when
    # a young ring's early links age out, seed 1414) while its members still harvest
    import detector.engine as engine_module

    start = EVENTS.get_column(s.TS).min()
    assert isinstance(start, datetime)
    cut = start + timedelta(hours=8)
    ring = [f"ring{a:02d}" for a in range(12)]
    real = engine_module.candidate_rings

    def still_flagged(config: DetectorConfig) -> int:
        engine = DetectionEngine(config)
        engine.ingest(EVENTS.filter(pl.col(s.TS) < cut), watermark=cut)
        assert all(engine.flags[a].active and engine.flags[a].ring_id for a in ring)
        with monkeypatch.context() as m:
            m.setattr(engine_module, "candidate_rings", lambda links, sus, **kw: real(links, sus.clear(), **kw))
            engine.ingest(EVENTS.filter(pl.col(s.TS) >= cut))
            engine.flush()
        return sum(engine.flags[a].active for a in ring)

    # the ring's own evidence only: its steady single-template traffic would flag each member alone too
    config = replace(CONFIG, solo_threshold=1.1)
    assert still_flagged(replace(config, ring_tenure=None)) == 0
    assert still_flagged(config) == len(ring)
