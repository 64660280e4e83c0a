"""Extraction campaigns (distillation rings): bulk, low-and-slow, heavy and evasive styles.

Each ring harvests answers to capability-targeted prompts (wrappers around corpus questions)
and starts at its own time inside the window, so time-to-detection can be measured.
"""

from __future__ import annotations

import numpy as np

from simulator import catalog as c
from simulator.corpus import PromptCorpus
from simulator.humans import HumanPrompts, PromptQueue, PromptTriple, human_accounts, human_events
from simulator.identities import (
    Identities,
    aged_signups,
    countries,
    ordinary_identities,
    register,
    schedule_in,
)
from simulator.timing import regular_series
from simulator.world import (
    EventChunk,
    ResponseSpec,
    World,
    datacenter_slash24s,
    hex_ids,
    hosts_in,
    made_up_domain,
    residential_ips,
    respond,
    weighted_choice,
    with_retries,
)
from simulator.wrappers import (
    FAMILIES,
    candidate_answer,
    paraphrase,
    perturb,
    random_template,
    render,
)

# Rings ask for long, reasoning-rich answers, up to a fixed max_tokens.
HARVEST = ResponseSpec(
    completion_median=1100.0,
    completion_sigma=0.55,
    max_tokens=4096,
    errors=(0.002, 0.0, 0.02, 0.003, 0.004),
)


def content_pool(corpus: PromptCorpus, family: str) -> np.ndarray:
    """Corpus questions a ring wraps for a capability family."""
    spec: dict[str, list[dict[str, tuple[str, ...]]]] = {
        "reasoning": [
            {"kinds": ("benchmark",), "tasks": ("math",)},
            {"kinds": ("human",), "tasks": ("math", "reasoning", "qa", "stem", "fermi")},
            {"kinds": ("machine",), "tasks": ("math",)},
        ],
        "coding": [
            {"kinds": ("machine",), "tasks": ("code",)},
            {"kinds": ("benchmark",), "tasks": ("code",)},
            {"kinds": ("human",), "tasks": ("code", "coding")},
        ],
        "agentic": [
            {"kinds": ("machine",), "tasks": ("agentic", "general")},
            {"kinds": ("human",), "tasks": ("general",)},
        ],
        "grading": [
            {"kinds": ("human",), "tasks": ("general", "qa", "writing", "open_qa")},
            {"kinds": ("machine",), "tasks": ("general", "writing")},
        ],
    }
    parts = [corpus.pool(**f) for f in spec[family]]
    idx = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return idx if idx.size else np.arange(len(corpus))


def capability_mix(rng: np.random.Generator, k: int) -> dict[str, float]:
    """`k` capability families with random weights (in FAMILIES order)."""
    chosen = sorted(rng.choice(len(FAMILIES), size=k, replace=False).tolist())
    w = rng.dirichlet(np.full(k, 3.0))
    return {FAMILIES[i]: float(x) for i, x in zip(chosen, w, strict=True)}


class Extractor:
    """Makes a ring's prompts: fixed templates, paraphrases, or perturbed paraphrases (evasive)."""

    def __init__(
        self,
        world: World,
        rng: np.random.Generator,
        mix: dict[str, float],
        mode: str,
        templates_per_family: int = 2,
    ) -> None:
        self.world, self.rng, self.mode = world, rng, mode
        self.families = list(mix)
        self.weights = np.array([mix[f] for f in self.families])
        self.templates = {f: [random_template(rng, f) for _ in range(templates_per_family)] for f in self.families}
        self.queues = {f: PromptQueue(rng, content_pool(world.corpus, f)) for f in self.families}

    def make(self, n: int) -> np.ndarray:
        """`n` new extraction prompts; returns their prompt indices."""
        fam = weighted_choice(self.rng, self.weights, n)
        texts = [""] * n
        codes = [0] * n
        corpus = self.world.corpus.texts
        for j, f in enumerate(self.families):
            at = np.flatnonzero(fam == j)
            content, _ = self.queues[f].take(at.size)
            code = FAMILIES.index(f)
            for i, ci in zip(at.tolist(), content.tolist(), strict=True):
                texts[i] = self._one(f, corpus[ci])
                codes[i] = code
        return self.world.add_prompts(texts, codes)

    def _one(self, family: str, content: str) -> str:
        rng = self.rng
        answer = candidate_answer(rng) if family == "grading" else ""
        if self.mode == "template":
            ts = self.templates[family]
            return render(ts[int(rng.integers(len(ts)))], content, answer)
        t = random_template(rng, family)
        if self.mode == "paraphrase":
            return render(t, content, answer, head_edit=lambda h: paraphrase(rng, h))
        return render(t, content, answer, head_edit=lambda h: perturb(rng, paraphrase(rng, h, 0.5)))


def _note(world: World, cid: str, style: str, acct: np.ndarray, planned_start: int, mix: dict[str, float]) -> None:
    world.groups[cid] = {
        "type": "campaign",
        "style": style,
        "accounts": acct,
        "planned_start_ms": planned_start,
        "planned_mix": mix,
    }


def _model(rng: np.random.Generator, n: int, top_share: float) -> np.ndarray:
    return np.where(rng.random(n) < top_share, c.TOP_MODEL, 1)


def bulk(world: World, cid: str, size: int) -> EventChunk:
    """Hundreds of fresh accounts in signup waves, rotating cloud proxies, synchronised bursts."""
    rng = world.rng(cid)
    start, end = world.start_ms, world.end_ms
    t0 = start + int(rng.uniform(0.15, 0.45) * world.window_ms)
    # Signup waves: accounts created minutes apart; most waves before the start, some during it.
    sizes: list[int] = []
    while sum(sizes) < size:
        sizes.append(min(size - sum(sizes), int(rng.integers(30, 81))))
    n_pre = max(1, int(np.ceil(0.6 * len(sizes))))
    wave_t = np.sort(t0 - rng.uniform(c.HOUR_MS, 48 * c.HOUR_MS, n_pre)).tolist()
    wave_t += np.sort(t0 + rng.uniform(0, 0.4 * (end - t0), len(sizes) - n_pre)).tolist()
    signup = np.concatenate(
        [
            int(w) + np.cumsum(rng.uniform(40_000, 240_000, k)).astype(np.int64)
            for w, k in zip(wave_t, sizes, strict=True)
        ]
    )
    active = np.maximum(t0, signup + rng.uniform(3, 15, signup.size).astype(np.int64) * c.MINUTE_MS)
    keep = active < end - 30 * c.MINUTE_MS
    signup, active = signup[keep], active[keep]
    n = signup.size

    nets = datacenter_slash24s(rng, int(rng.integers(3, 6)))
    pool = world.ips.add_many(hosts_in(rng, nets, 600)).astype(np.int64)
    domain = made_up_domain(rng, c.CHEAP_TLDS, 3)
    shape = "a" * int(rng.integers(6, 10)) + "9" * int(rng.integers(2, 5))
    fps = hex_ids(rng, int(rng.integers(3, 7)), 8, "pf_")
    claimed = [c.COUNTRIES[i][0] for i in rng.choice(len(c.COUNTRIES), 2, replace=False).tolist()]
    ids = Identities(
        country=[claimed[int(x)] for x in rng.integers(0, 2, n)],
        tz=np.zeros(n),
        signup_ms=signup,
        domain=[domain] * n,
        shape=[shape] * n,
        plan=["build"] * n,
        kyc=["none"] * n,
        org=hex_ids(rng, n, 6, "org_"),
        payment=[fps[int(x)] for x in rng.integers(0, len(fps), n)],
        payment_delay_ms=rng.uniform(2, 10, n).astype(np.int64) * c.MINUTE_MS,
        signup_ip=[world.ips.values[int(i)] for i in pool[rng.integers(0, pool.size, n)]],
    )
    acct = register(world, rng, ids, label="attacker", group=cid)
    key = world.add_keys(rng, np.ones(n, np.int64)).astype(np.int64)
    ua = world.uas.add(
        ("python-httpx/0.27.2", "python-requests/2.31.0", "aiohttp/3.9.5", "atlas-python/1.9.0")[int(rng.integers(4))]
    )

    # Synchronised bursts: every P minutes the operator's scheduler fires; each live member
    # joins with probability q and sends a few requests seconds apart.
    period = rng.uniform(20, 40) * c.MINUTE_MS
    q = rng.uniform(0.55, 0.8)
    per_day = rng.uniform(60, 110)
    per_join = max(1.0, per_day / (c.DAY_MS / period * q))
    bursts = t0 + (np.arange(int((end - t0) / period) + 1) * period).astype(np.int64)
    bursts[1:] += rng.uniform(-90_000, 90_000, bursts.size - 1).astype(np.int64)
    bursts = bursts[bursts < end]
    live = (active[None, :] <= bursts[:, None]) & (rng.random((bursts.size, n)) < q)
    live[0, :] |= active <= bursts[0]  # everyone ready at the start fires in the first burst
    bj, mj = np.nonzero(live)
    k = 1 + rng.poisson(per_join - 1.0, bj.size)
    pair = np.repeat(np.arange(bj.size), k)
    first = np.zeros(pair.size, bool)
    first[np.cumsum(k) - k] = True
    gaps = np.where(first, 0.0, rng.uniform(2_000, 12_000, pair.size))
    cs = np.cumsum(gaps)
    offset = cs - np.repeat(cs[np.cumsum(k) - k], k)
    ts = bursts[bj][pair] + rng.uniform(0, 60_000, bj.size)[pair].astype(np.int64) + offset.astype(np.int64)
    m = mj[pair]
    ok = ts < end
    ts, m = ts[ok], m[ok]

    mix = capability_mix(rng, 2)
    extractor = Extractor(world, rng, mix, "template", templates_per_family=2)
    chunk = respond(
        rng,
        acct=acct[m],
        ts=ts,
        ip=pool[rng.integers(0, pool.size, ts.size)],
        ua=np.full(ts.size, ua),
        key=key[m],
        model=_model(rng, ts.size, 0.9),
        endpoint=np.full(ts.size, c.EP_MESSAGES),
        prompt=extractor.make(ts.size),
        spec=HARVEST,
    )
    _note(world, cid, "bulk", acct, t0, mix)
    return with_retries(rng, chunk, p_retry=0.9, end_ms=end, backoff_median_s=1.5, spec=HARVEST)


def low_and_slow(world: World, cid: str, size: int) -> EventChunk:
    """Many unrelated-looking accounts, few requests each, sharing a wrapper family, shifts."""
    rng = world.rng(cid)
    start, end = world.start_ms, world.end_ms
    # The operators start their shift at 09:00 local, somewhere in the first half of the window.
    tz, t0 = schedule_in(rng, start + int(0.05 * world.window_ms), start + int(0.5 * world.window_ms), 9.0)
    shift = rng.uniform(8.0, 9.5) * c.HOUR_MS
    shifts = t0 + np.arange(int((end - t0) // c.DAY_MS) + 1) * c.DAY_MS
    shifts = shifts[shifts < end]

    signup = aged_signups(rng, start, size, mean_days=40.0, min_days=3.0)
    ips_a = residential_ips(rng, size)
    ids = ordinary_identities(rng, size, signup_ms=signup, signup_ips=ips_a)
    ids.plan = ["build"] * size
    ids.payment = list[str | None](hex_ids(rng, size, 8, "pf_"))
    ids.kyc = ["none"] * size
    acct = register(world, rng, ids, label="attacker", group=cid)
    ip2 = np.stack([world.ips.add_many(ips_a), world.ips.add_many(residential_ips(rng, size))], axis=1)
    ua_ids = world.uas.add_many([u[0] for u in c.BENIGN_USER_AGENTS])
    ua = ua_ids[weighted_choice(rng, [u[1] for u in c.BENIGN_USER_AGENTS], size)]
    key = world.add_keys(rng, np.ones(size, np.int64)).astype(np.int64)

    base = rng.uniform(5, 30, size)
    grid_d, grid_a = np.meshgrid(np.arange(shifts.size), np.arange(size), indexing="ij")
    sd, sa = grid_d.ravel(), grid_a.ravel()
    r = base[sa] * rng.uniform(0.8, 1.2, sa.size)
    k = np.maximum(1, np.rint(r)).astype(np.int64)
    pair = np.repeat(np.arange(sa.size), k)
    first = np.zeros(pair.size, bool)
    first[np.cumsum(k) - k] = True
    # Synchronised start (scheduler fires at 09:00 plus up to two minutes), then a scripted
    # sleep(uniform(0.5, 1.5) * shift / n) between requests.
    gaps = np.where(
        first,
        rng.uniform(0, 120_000, pair.size),
        rng.uniform(0.5, 1.5, pair.size) * shift / r[pair],
    )
    cs = np.cumsum(gaps)
    offset = cs - np.repeat(cs[np.cumsum(k) - k], k) + gaps[np.repeat(np.cumsum(k) - k, k)]
    ts = shifts[sd][pair] + offset.astype(np.int64)
    ok = (ts < shifts[sd][pair] + shift) & (ts < end) & (ts >= start)
    ts, loc, day = ts[ok], sa[pair][ok], sd[pair][ok]

    mix = capability_mix(rng, 1)
    extractor = Extractor(world, rng, mix, "paraphrase")
    chunk = respond(
        rng,
        acct=acct[loc],
        ts=ts,
        ip=ip2[loc, (day + loc) % 2],
        ua=ua[loc],
        key=key[loc],
        model=_model(rng, ts.size, 0.95),
        endpoint=np.full(ts.size, c.EP_MESSAGES),
        prompt=extractor.make(ts.size),
        spec=HARVEST,
    )
    _note(world, cid, "low_and_slow", acct, t0, mix)
    world.groups[cid]["operator_tz"] = tz
    return with_retries(rng, chunk, p_retry=0.7, end_ms=end, spec=HARVEST)


def heavy(world: World, cid: str, size: int) -> EventChunk:
    """A few very heavy accounts: thousands of requests a day, round the clock, machine-regular."""
    rng = world.rng(cid)
    start, end = world.start_ms, world.end_ms
    t0 = start + int(rng.uniform(0.15, 0.5) * world.window_ms)
    country, _ = countries(rng, size)
    ids = Identities(
        country=country,
        tz=np.zeros(size),
        signup_ms=aged_signups(rng, start, size, mean_days=30.0, min_days=7.0),
        domain=[made_up_domain(rng, (".io", ".ai", ".com"), 2) for _ in range(size)],
        shape=["a" * int(x) for x in rng.integers(4, 9, size)],
        plan=["scale"] * size,
        kyc=["verified" if x < 0.6 else "pending" for x in rng.random(size)],
        org=hex_ids(rng, size, 6, "org_"),
        payment=list(hex_ids(rng, size, 8, "pf_")),
        payment_delay_ms=np.full(size, 10 * c.MINUTE_MS),
        signup_ip=hosts_in(rng, datacenter_slash24s(rng, size), size),
    )
    acct = register(world, rng, ids, label="attacker", group=cid)
    key = world.add_keys(rng, np.ones(size, np.int64)).astype(np.int64)
    ua_choices = world.uas.add_many(["python-requests/2.32.3", "atlas-python/1.12.0", "python-httpx/0.27.2"])
    times, who, ips, uas = [], [], [], []
    for i in range(size):
        rate = rng.uniform(2000, 5000)
        workers = int(rng.integers(1, 4))
        ip = world.ips.add_many(hosts_in(rng, datacenter_slash24s(rng, 1), workers))
        a_start = t0 + int(rng.uniform(0, 30) * c.MINUTE_MS)
        # A fixed-rate dispatcher hands requests round-robin to workers on a few cloud hosts.
        t = regular_series(rng, a_start, end, c.DAY_MS / rate, 0.03)
        times.append(t)
        who.append(np.full(t.size, i))
        ips.append(ip[np.arange(t.size) % workers])
        uas.append(np.full(t.size, ua_choices[i % ua_choices.size]))
    ts, loc = np.concatenate(times), np.concatenate(who)
    mix = capability_mix(rng, int(rng.integers(1, 3)))
    extractor = Extractor(world, rng, mix, "template", templates_per_family=1)
    spec = ResponseSpec(
        HARVEST.completion_median,
        HARVEST.completion_sigma,
        HARVEST.max_tokens,
        (0.002, 0.0, 0.04, 0.003, 0.004),
    )
    chunk = respond(
        rng,
        acct=acct[loc],
        ts=ts,
        ip=np.concatenate(ips),
        ua=np.concatenate(uas),
        key=key[loc],
        model=np.full(ts.size, c.TOP_MODEL),
        endpoint=np.full(ts.size, c.EP_MESSAGES),
        prompt=extractor.make(ts.size),
        spec=spec,
    )
    _note(world, cid, "heavy", acct, t0, mix)
    return with_retries(rng, chunk, p_retry=1.0, end_ms=end, backoff_median_s=1.0, spec=spec)


def _varied_user_agents(rng: np.random.Generator, n: int) -> list[str]:
    """Distinct-looking client strings, one per account (browsers and SDKs at assorted versions)."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.45:
            v = int(rng.integers(118, 126))
            osx = (
                "Windows NT 10.0; Win64; x64",
                "Macintosh; Intel Mac OS X 10_15_7",
                "X11; Linux x86_64",
            )
            out.append(
                f"Mozilla/5.0 ({osx[int(rng.integers(3))]}) AppleWebKit/537.36 (KHTML, like Gecko) "
                f"Chrome/{v}.0.{int(rng.integers(5000, 6400))}.{int(rng.integers(10, 200))} "
                "Safari/537.36"
            )
        elif r < 0.6:
            out.append(
                f"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{int(rng.integers(115, 126))}.0) "
                f"Gecko/20100101 Firefox/{int(rng.integers(115, 126))}.0"
            )
        elif r < 0.85:
            out.append(f"atlas-python/1.{int(rng.integers(5, 13))}.{int(rng.integers(0, 4))}")
        else:
            out.append(f"atlas-typescript/1.{int(rng.integers(3, 9))}.{int(rng.integers(0, 3))}")
    return out


def evasive(world: World, cid: str, size: int, prompts: HumanPrompts) -> EventChunk:
    """Aged accounts, a sticky home IP each, varied clients, perturbed wrappers, human timing."""
    rng = world.rng(cid)
    start, end = world.start_ms, world.end_ms
    t0 = start + int(rng.uniform(0.05, 0.4) * world.window_ms)
    home = residential_ips(rng, size)
    ids = ordinary_identities(
        rng,
        size,
        signup_ms=aged_signups(rng, start, size, mean_days=150.0, min_days=60.0),
        signup_ips=residential_ips(rng, size),
    )
    ids.plan = [p if p != "free" else "build" for p in ids.plan]
    ids.payment = list[str | None](hex_ids(rng, size, 8, "pf_"))
    ids.kyc = ["verified" if x < 0.4 else "none" for x in rng.random(size)]
    acct = register(world, rng, ids, label="attacker", group=cid)
    home_ip = world.ips.add_many(home).astype(np.int64)
    ua = world.uas.add_many(_varied_user_agents(rng, size)).astype(np.int64)

    # Cover traffic from the aged accounts' ordinary past, then extraction from t0 on.
    cover = human_accounts(
        world,
        rng,
        acct,
        tz=ids.tz,
        lo=np.full(size, start),
        hi=np.full(size, t0),
        rate_median=3.0,
        power_share=0.0,
        home_ip=home_ip,
        ua_fixed=ua,
    )
    chunks = []
    if t0 - start > 10 * c.MINUTE_MS:
        chunks.append(human_events(world, rng, cover, prompts.make()))
    work = human_accounts(
        world,
        rng,
        acct,
        tz=ids.tz,
        lo=np.full(size, t0),
        hi=np.full(size, end),
        power_share=0.0,
        profile_weights=(0.5, 0.5, 0.0, 0.0),
        home_ip=home_ip,
        ua_fixed=ua,
    )
    work.key_base, work.n_keys = cover.key_base, cover.n_keys
    work.rate = rng.uniform(30, 80, size)
    work.session_mean = np.full(size, 6.0)
    work.model_pref = np.where(rng.random(size) < 0.85, c.TOP_MODEL, 1)
    mix = capability_mix(rng, 2)
    extractor = Extractor(world, rng, mix, "evasive")
    plain = prompts.make(follow_up=0.04)

    def mixed(
        rng_: np.random.Generator, machine_share: np.ndarray, first: np.ndarray, extra: np.ndarray
    ) -> PromptTriple:
        prompt, affix, lower = plain(rng_, machine_share, first, extra)
        wrap = np.flatnonzero(rng_.random(first.size) < 0.85)  # some ordinary requests keep blending in
        prompt[wrap] = extractor.make(wrap.size)
        affix[wrap] = 0
        lower[wrap] = False
        return prompt, affix, lower

    chunks.append(human_events(world, rng, work, mixed, spec=HARVEST, p_mobile=0.0, p_office=0.0))
    _note(world, cid, "evasive", acct, t0, mix)
    return EventChunk.concat(chunks)
