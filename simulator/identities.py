"""Who the accounts say they are: sign-up facts, plans, payment instruments, KYC, organisations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator import catalog as c
from simulator.world import (
    AccountRow,
    World,
    email_shapes,
    hex_ids,
    made_up_domain,
    weighted_choice,
)


@dataclass
class Identities:
    """Per-account identity facts, as lists (one entry per account)."""

    country: list[str]
    tz: np.ndarray
    signup_ms: np.ndarray
    domain: list[str]
    shape: list[str]
    plan: list[str]
    kyc: list[str]
    org: list[str]
    payment: list[str | None]
    payment_delay_ms: np.ndarray
    signup_ip: list[str]

    def __len__(self) -> int:
        return len(self.country)


def countries(rng: np.random.Generator, n: int) -> tuple[list[str], np.ndarray]:
    """Countries and UTC offsets of ordinary users, weighted like a global developer audience."""
    k = weighted_choice(rng, [w for _, _, w in c.COUNTRIES], n)
    return [c.COUNTRIES[i][0] for i in k.tolist()], np.array([c.COUNTRIES[i][1] for i in k.tolist()], dtype=np.float64)


def country_near(rng: np.random.Generator, tz: float) -> str:
    """A country whose May UTC offset is closest to `tz` (ties broken at random)."""
    d = np.array([abs(t - tz) for _, t, _ in c.COUNTRIES])
    best = np.flatnonzero(d == d.min())
    return c.COUNTRIES[int(best[rng.integers(best.size)])][0]


def tz_for_local_hour(t_ms: int, local_hour: float) -> float:
    """The UTC offset (hours, in [-11, 13]) at which `t_ms` reads `local_hour` on the wall clock."""
    utc_h = (t_ms % c.DAY_MS) / c.HOUR_MS
    off = (local_hour - utc_h) % 24.0
    return off - 24.0 if off > 13.0 else off


# Where ring operators and enterprise ops teams plausibly sit (UTC offsets in May).
OPERATOR_TZS = (8.0, 3.0, 5.5, 7.0, 1.0, 2.0, -4.0, -3.0, 9.0, -7.0)


def next_local_time(after_ms: int, tz: float, local_hour: float) -> int:
    """The first moment at or after `after_ms` when the wall clock at `tz` reads `local_hour`."""
    offset = round((local_hour - tz) * c.HOUR_MS) % c.DAY_MS
    t = after_ms - after_ms % c.DAY_MS + offset
    return t if t >= after_ms else t + c.DAY_MS


def schedule_in(rng: np.random.Generator, lo_ms: int, hi_ms: int, local_hour: float) -> tuple[float, int]:
    """A plausible timezone and the first `local_hour` there within [lo, hi).

    Falls back to deriving the timezone from the time when no plausible one fits (short windows).
    """
    for k in rng.permutation(len(OPERATOR_TZS)).tolist():
        t = next_local_time(lo_ms, OPERATOR_TZS[k], local_hour)
        if t < hi_ms:
            return OPERATOR_TZS[k], t
    t = lo_ms - lo_ms % c.HOUR_MS + c.HOUR_MS
    t = t if t < hi_ms else lo_ms
    return tz_for_local_hour(t, local_hour), t


def ordinary_identities(
    rng: np.random.Generator,
    n: int,
    *,
    signup_ms: np.ndarray,
    signup_ips: list[str],
    company_share: float = 0.3,
) -> Identities:
    """Identity facts of ordinary people: free mail or work domains, mostly free or small plans."""
    country, tz = countries(rng, n)
    fm = weighted_choice(rng, [w for _, w in c.FREEMAIL_DOMAINS], n)
    companies = [made_up_domain(rng, c.COMPANY_TLDS, int(rng.integers(2, 4))) for _ in range(max(8, n // 6))]
    comp = rng.integers(0, len(companies), n)
    use_company = rng.random(n) < company_share
    domain = [companies[comp[i]] if use_company[i] else c.FREEMAIL_DOMAINS[fm[i]][0] for i in range(n)]
    plan_k = weighted_choice(rng, [w for _, w in c.PLANS_BENIGN], n)
    plan = [c.PLANS_BENIGN[k][0] for k in plan_k.tolist()]
    u = rng.random(n)
    kyc = []
    for p, x in zip(plan, u.tolist(), strict=True):
        if p == "scale" or (p == "pro" and x < 0.3):
            kyc.append("verified")
        elif x > 0.99:
            kyc.append("pending")
        elif x > 0.987:
            kyc.append("failed")
        else:
            kyc.append("none")
    fps = hex_ids(rng, n, 8, "pf_")
    payment: list[str | None] = [fp if p != "free" else None for fp, p in zip(fps, plan, strict=True)]
    return Identities(
        country=country,
        tz=tz,
        signup_ms=signup_ms.astype(np.int64),
        domain=domain,
        shape=email_shapes(rng, n),
        plan=plan,
        kyc=kyc,
        org=hex_ids(rng, n, 6, "org_"),
        payment=payment,
        payment_delay_ms=np.rint(rng.lognormal(np.log(2 * c.HOUR_MS), 2.0, n)).astype(np.int64),
        signup_ip=signup_ips,
    )


def register(world: World, rng: np.random.Generator, ids: Identities, *, label: str, group: str | None) -> np.ndarray:
    """Add accounts to the world; returns their indices."""
    out = np.empty(len(ids), dtype=np.int64)
    kyc_delay = rng.uniform(c.HOUR_MS, 5 * c.DAY_MS, len(ids)).astype(np.int64)
    for i in range(len(ids)):
        signup = int(ids.signup_ms[i])
        pay = ids.payment[i]
        out[i] = world.add_account(
            AccountRow(
                label=label,
                group=group,
                org_id=ids.org[i],
                signup_ms=signup,
                email_domain=ids.domain[i],
                email_shape=ids.shape[i],
                country=ids.country[i],
                signup_ip=ids.signup_ip[i],
                plan=ids.plan[i],
                kyc=ids.kyc[i],
                payment_fp=pay,
                payment_ms=None if pay is None else signup + int(ids.payment_delay_ms[i]),
                kyc_ms=None if ids.kyc[i] == "none" else signup + int(kyc_delay[i]),
            )
        )
    return out


def aged_signups(
    rng: np.random.Generator, start_ms: int, n: int, *, mean_days: float, min_days: float = 1.0
) -> np.ndarray:
    """Sign-up times of accounts created well before the window."""
    # Capped at three years: the API is not older than that.
    age = np.minimum(min_days + rng.exponential(mean_days, n), 1100.0)
    return start_ms - (age * c.DAY_MS).astype(np.int64)
