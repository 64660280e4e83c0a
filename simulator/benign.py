"""Ordinary users: the heavy-tailed majority, with teams, offices and carrier NAT as noise."""

from __future__ import annotations

import numpy as np

from core import schema as s
from simulator import catalog as c
from simulator.humans import HumanPrompts, human_accounts, human_events
from simulator.identities import aged_signups, ordinary_identities, register
from simulator.world import EventChunk, World, hex_ids, residential_ips


def benign_users(world: World, n: int, prompts: HumanPrompts, stream: str = "benign") -> tuple[np.ndarray, EventChunk]:
    """Register `n` ordinary accounts and generate their traffic (RNG stream `stream`)."""
    rng = world.rng(stream)
    start, end = world.start_ms, world.end_ms
    # Most accounts are old; a few sign up in the window ("new account" alone proves nothing).
    signup = aged_signups(rng, start, n, mean_days=240.0)
    new = rng.random(n) < 0.03
    signup[new] = start + (rng.random(int(new.sum())) * 0.9 * world.window_ms).astype(np.int64)
    home = residential_ips(rng, n, v6_share=0.08)
    ids = ordinary_identities(
        rng,
        n,
        signup_ms=signup,
        signup_ips=[h if rng.random() < 0.8 else ip for h, ip in zip(home, residential_ips(rng, n), strict=True)],
    )
    office = np.full(n, -1, np.int64)

    # Small teams share an organisation, a company card and an office address: legitimate
    # shared infrastructure that any linking detector will see.
    order = rng.permutation(n)
    pos, team_budget = 0, int(0.1 * n)
    while team_budget > 1 and pos < n - 1:
        size = min(int(rng.integers(2, 9)), team_budget, n - pos)
        members = order[pos : pos + size]
        pos += size
        team_budget -= size
        org = hex_ids(rng, 1, 6, "org_")[0]
        fp = hex_ids(rng, 1, 8, "pf_")[0]
        office_ip = world.ips.add(residential_ips(rng, 1)[0])
        domain = ids.domain[int(members[0])]
        for m in members.tolist():
            ids.org[m] = org
            office[m] = office_ip
            ids.domain[m] = domain
            if ids.plan[m] != "free":
                ids.payment[m] = fp
    solo_office = (office < 0) & (rng.random(n) < 0.15)
    office[solo_office] = world.ips.add_many(residential_ips(rng, int(solo_office.sum())))

    acct = register(world, rng, ids, label="benign", group=None)
    # A few upgrades during the window (the contract's profile_update).
    for i in np.flatnonzero(rng.random(n) < 0.03).tolist():
        lo_u = max(int(ids.signup_ms[i]) + c.HOUR_MS, start)
        if lo_u < end:
            world.add_account_event(
                int(acct[i]),
                int(rng.integers(lo_u, end)),
                "profile_update",
                {s.PLAN: "pro" if ids.plan[i] != "pro" else "scale"},
            )
    mobile_pool = world.ips.add_many(residential_ips(rng, max(20, n // 15), v6_share=0.2)).astype(np.int64)
    lo = np.maximum(start, ids.signup_ms + rng.integers(c.MINUTE_MS, 30 * c.MINUTE_MS, n))
    h = human_accounts(
        world,
        rng,
        acct,
        tz=ids.tz,
        lo=lo,
        hi=np.full(n, end, np.int64),
        home_ip=world.ips.add_many(home).astype(np.int64),
        mobile_pool=mobile_pool,
        office_ip=office,
    )
    return acct, human_events(world, rng, h, prompts.make())


def benign_events_per_account(seed: int, start_ms: int, end_ms: int, n: int = 2000) -> float:
    """Average events per benign account for this window (a cheap pilot, for `target_events`)."""
    from simulator.timing import diurnal_times, expand_sessions

    rng = np.random.default_rng([seed, 99])
    rate = rng.lognormal(np.log(5.0), 1.1, n)
    power = rng.random(n) < 0.04
    rate[power] = np.minimum(40.0 * (1.0 + rng.pareto(1.5, int(power.sum()))), 450.0)
    rate = np.clip(rate, 0.2, 450.0)
    smean = np.clip(2.0 + 0.03 * rate, 2.0, 10.0)
    days = (end_ms - start_ms) / c.DAY_MS
    n_sess = np.maximum(1, rng.poisson(rate * days / smean))
    sa = np.repeat(np.arange(n), n_sess)
    lo, hi = np.full(sa.size, start_ms, np.int64), np.full(sa.size, end_ms, np.int64)
    starts = diurnal_times(rng, np.zeros(sa.size), np.zeros(sa.size, np.int64), lo, hi)
    _, ts, _ = expand_sessions(rng, starts, rng.geometric(1.0 / smean[sa]), np.full(sa.size, 75.0), 0.9)
    return float((ts < end_ms).sum()) / n * 1.01  # ~1% retries
