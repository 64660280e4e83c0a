"""The simulator: deterministic by seed, contract-valid, consistent truth, rings as specified."""

from __future__ import annotations

import gzip
import ipaddress
import itertools
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from core import schema as s
from simulator import SimulationSummary, simulate

SMALL = {"accounts": 400, "days": 0.5}
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
FILES = ("events.jsonl.gz", "accounts.jsonl.gz", "truth.json")
DAY_MS = 86_400_000


def _ms(ts: str) -> int:
    return int(datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


def _lines(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh]


class Run:
    """One simulation's output, parsed."""

    def __init__(self, summary: SimulationSummary) -> None:
        self.summary = summary
        self.dir = summary.out_dir
        self.events = _lines(summary.events_path)
        self.account_events = _lines(summary.accounts_path)
        self.truth = orjson.loads(summary.truth_path.read_bytes())
        self.by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in self.events:
            self.by_account[e[s.ACCOUNT_ID]].append(e)
        self.signups = {a[s.ACCOUNT_ID]: a for a in self.account_events if a[s.TYPE] == "signup"}

    def campaign(self, style: str) -> dict[str, Any]:
        return next(c for c in self.truth["campaigns"] if c["style"] == style)

    def lookalike(self, kind: str) -> dict[str, Any]:
        return next(g for g in self.truth["lookalikes"] if g["kind"] == kind)


@pytest.fixture(scope="module")
def progress_log() -> list[tuple[str, float]]:
    return []


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, progress_log: list[tuple[str, float]]) -> Run:
    out = tmp_path_factory.mktemp("sim_a")
    return Run(simulate(seed=7, out_dir=out, progress=lambda st, f: progress_log.append((st, f)), **SMALL))


@pytest.fixture(scope="module")
def run_again(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim_a2")
    simulate(seed=7, out_dir=out, **SMALL)
    return out


@pytest.fixture(scope="module")
def run_other_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim_b")
    simulate(seed=8, out_dir=out, **SMALL)
    return out


def test_same_seed_gives_identical_bytes(run: Run, run_again: Path) -> None:
    for name in FILES:
        assert (run.dir / name).read_bytes() == (run_again / name).read_bytes(), name


def test_different_seed_gives_a_different_population(run: Run, run_other_seed: Path) -> None:
    for name in FILES:
        assert (run.dir / name).read_bytes() != (run_other_seed / name).read_bytes(), name
    other = orjson.loads((run_other_seed / "truth.json").read_bytes())
    assert not set(other["accounts"]) & set(run.truth["accounts"])


def test_every_event_follows_the_contract(run: Run) -> None:
    known = set(s.EVENT_SCHEMA) - {s.EXTRA}
    ids = set()
    last = ""
    for e in run.events:
        assert set(e) <= known, set(e) - known
        for req in s.EVENT_REQUIRED:
            assert req in e
        for f in s.EVENT_STRING_FIELDS:
            if f in e:
                assert isinstance(e[f], str) and e[f], (f, e)
        for f in s.EVENT_INT_FIELDS:
            assert isinstance(e[f], int) and not isinstance(e[f], bool), (f, e)
        for f in s.EVENT_NONNEGATIVE_INT_FIELDS:
            assert e[f] >= 0
        assert 100 <= e[s.STATUS] <= 599
        assert TS_RE.match(e[s.TS]), e[s.TS]
        assert e[s.TS] >= last  # sorted by time
        last = e[s.TS]
        ipaddress.ip_address(e[s.IP])
        assert 1 <= len(e[s.EVENT_ID]) <= s.ID_MAX_CHARS and 1 <= len(e[s.ACCOUNT_ID]) <= s.ID_MAX_CHARS
        assert re.fullmatch(r"evt_[0-9a-f]{16}", e[s.EVENT_ID])
        assert re.fullmatch(r"acct_[0-9a-f]{12}", e[s.ACCOUNT_ID])
        ids.add(e[s.EVENT_ID])
    assert len(ids) == len(run.events)
    t = run.truth
    assert t["start_ts"] <= run.events[0][s.TS] and run.events[-1][s.TS] < t["end_ts"]


def test_the_ingest_validator_accepts_everything(run: Run) -> None:
    contract = pytest.importorskip("ingest.contract")
    with gzip.open(run.summary.events_path, "rb") as fh:
        lines = fh.read().splitlines()
    batch = contract.decode_records(lines, kind=contract.EVENTS)
    assert batch.rejected.height == 0, batch.rejected.head(3).to_dicts()
    acc_lines = gzip.decompress(run.summary.accounts_path.read_bytes()).splitlines()
    acc = contract.decode_records(acc_lines, kind=contract.ACCOUNT_EVENTS)
    assert acc.rejected.height == 0, acc.rejected.head(3).to_dicts()


def test_account_events_follow_the_contract(run: Run) -> None:
    known = set(s.ACCOUNT_EVENT_SCHEMA) - {s.EXTRA}
    last = ""
    for a in run.account_events:
        assert set(a) <= known
        assert a[s.TYPE] in s.ACCOUNT_EVENT_TYPES
        assert TS_RE.match(a[s.TS]) and a[s.TS] >= last
        last = a[s.TS]
        if s.KYC_STATUS in a:
            assert a[s.KYC_STATUS] in s.KYC_STATUSES
        if a[s.TYPE] == "signup":
            assert re.fullmatch(r"[a9._-]+", a[s.EMAIL_LOCAL_SHAPE])
            assert len(a[s.COUNTRY]) == 2
            ipaddress.ip_address(a[s.SIGNUP_IP])
    assert last < run.truth["end_ts"]
    # Aged accounts signed up long before the window.
    assert min(run.signups.values(), key=lambda a: a[s.TS])[s.TS] < "2026-03-01"


def test_truth_is_consistent_with_the_events(run: Run) -> None:
    t = run.truth
    assert t["schema"] == s.TRUTH_SCHEMA_ID and t["seed"] == run.summary.seed
    assert t["n_events"] == len(run.events) == run.summary.n_events
    assert set(t["accounts"]) == set(run.by_account) == set(run.signups)
    assert {v["label"] for v in t["accounts"].values()} == {"benign", "lookalike", "attacker"}
    assert {c["style"] for c in t["campaigns"]} >= {"bulk", "low_and_slow", "heavy", "evasive"}
    assert {g["kind"] for g in t["lookalikes"]} >= {
        "campus_nat",
        "enterprise_batch",
        "app_system_prompt",
        "benchmark_researcher",
    }
    for group in t["campaigns"] + t["lookalikes"]:
        gid = group.get("campaign_id") or group["group_id"]
        label = "attacker" if "campaign_id" in group else "lookalike"
        assert group["accounts"], gid
        for a in group["accounts"]:
            assert t["accounts"][a] == {"label": label, "group": gid}
        assert group["n_events"] == sum(len(run.by_account[a]) for a in group["accounts"])
    n_grouped = sum(len(g["accounts"]) for g in t["campaigns"] + t["lookalikes"])
    assert n_grouped == sum(1 for v in t["accounts"].values() if v["group"] is not None)
    for c in t["campaigns"]:
        assert c["capabilities"] and abs(sum(c["capabilities"].values()) - 1.0) < 0.01
        assert set(c["capabilities"]) <= {"reasoning", "coding", "agentic", "grading"}


def test_accounts_sign_up_before_their_first_request(run: Run) -> None:
    for a, ev in run.by_account.items():
        assert run.signups[a][s.TS] < ev[0][s.TS], a


def test_campaigns_start_inside_the_window_at_different_times(run: Run) -> None:
    starts = [c["start_ts"] for c in run.truth["campaigns"]]
    assert all(run.truth["start_ts"] < st < run.truth["end_ts"] for st in starts)
    assert len(set(starts)) == len(starts)
    for c in run.truth["campaigns"]:
        first = min(e[s.TS] for a in c["accounts"] for e in run.by_account[a])
        assert first <= c["start_ts"]


def _per_day_max(events: list[dict[str, Any]]) -> int:
    return max(Counter(e[s.TS][:10] for e in events).values())


def test_bulk_ring_shares_infrastructure_at_modest_volume(run: Run) -> None:
    c = run.campaign("bulk")
    members = c["accounts"]
    assert len(members) >= 20
    events = [e for a in members for e in run.by_account[a]]
    assert len({e[s.USER_AGENT] for e in events}) == 1
    nets = {e[s.IP].rsplit(".", 1)[0] for e in events}
    assert len(nets) <= 5
    assert len({e[s.IP] for e in events}) > 5 * len(nets)  # rotating proxies
    for a in members:
        assert _per_day_max(run.by_account[a]) < 200
    signups = [run.signups[a] for a in members]
    assert len({x[s.EMAIL_DOMAIN] for x in signups}) == 1
    assert len({x[s.EMAIL_LOCAL_SHAPE] for x in signups}) == 1
    fps = {
        a[s.PAYMENT_FINGERPRINT]
        for a in run.account_events
        if a[s.TYPE] == "payment_added" and a[s.ACCOUNT_ID] in set(members)
    }
    assert 1 <= len(fps) <= 6
    # Signup waves: consecutive signups minutes apart.
    times = sorted(_ms(x[s.TS]) for x in signups)
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] < 5 * 60_000


def test_heavy_accounts_are_very_heavy_and_regular(run: Run) -> None:
    for a in run.campaign("heavy")["accounts"]:
        ev = run.by_account[a]
        ts = sorted(_ms(e[s.TS]) for e in ev)
        span_days = (ts[-1] - ts[0]) / DAY_MS
        assert len(ev) / span_days >= 1000
        gaps = sorted(b - a for a, b in itertools.pairwise(ts))
        q1, q3 = gaps[len(gaps) // 4], gaps[3 * len(gaps) // 4]
        assert q3 <= 3 * max(q1, 1)  # machine-regular spacing


def test_low_and_slow_is_low_and_synchronised(run: Run) -> None:
    c = run.campaign("low_and_slow")
    firsts = []
    for a in c["accounts"]:
        ev = run.by_account[a]
        assert _per_day_max(ev) <= 40
        firsts.append(_ms(ev[0][s.TS]))
    firsts.sort()
    # Shifts start together: most members' first request falls within a few minutes.
    core = firsts[: max(1, int(0.9 * len(firsts)))]
    assert core[-1] - core[0] <= 5 * 60_000
    assert len({run.signups[a][s.EMAIL_DOMAIN] for a in c["accounts"]}) > 1


def test_evasive_ring_is_aged_sticky_varied_and_perturbed(run: Run) -> None:
    c = run.campaign("evasive")
    start = run.truth["start_ts"]
    uas = set()
    for a in c["accounts"]:
        ev = run.by_account[a]
        assert len({e[s.IP] for e in ev}) == 1
        uas |= {e[s.USER_AGENT] for e in ev}
        assert _ms(start) - _ms(run.signups[a][s.TS]) >= 60 * DAY_MS
    assert len(uas) >= 0.8 * len(c["accounts"])
    prompts = [e[s.PROMPT] for a in c["accounts"] for e in run.by_account[a]]
    assert any(re.search("[\u0400-\u04ff]", p) for p in prompts)  # Cyrillic confusables


def test_lookalikes_have_their_suspicious_signals(run: Run) -> None:
    campus = run.lookalike("campus_nat")
    ev = [e for a in campus["accounts"] for e in run.by_account[a]]
    share = sum(e[s.IP] in campus["nat_ips"] for e in ev) / len(ev)
    assert share > 0.5
    assert len({run.signups[a][s.EMAIL_DOMAIN] for a in campus["accounts"]}) <= 10

    ent = run.lookalike("enterprise_batch")
    assert len({run.signups[a][s.ORG_ID] for a in ent["accounts"]}) == 1
    ev = [e for a in ent["accounts"] for e in run.by_account[a]]
    assert {e[s.ORG_ID] for e in ev} == {ent["org_id"]}
    assert sum(e[s.PROMPT].startswith(("Summarise", "Classify", "Extract", "Translate")) for e in ev) > 0.5 * len(ev)

    app = run.lookalike("app_system_prompt")
    ev = [e for a in app["accounts"] for e in run.by_account[a]]
    assert {e.get(s.SYSTEM_PROMPT_HASH) for e in ev} == {app["system_prompt_hash"]}
    assert len({e[s.USER_AGENT] for e in ev}) == 1
    others = [e for e in run.events if e[s.ACCOUNT_ID] not in set(app["accounts"])]
    assert all(s.SYSTEM_PROMPT_HASH not in e for e in others)

    res = run.lookalike("benchmark_researcher")
    ev = [e for a in res["accounts"] for e in run.by_account[a]]
    assert len(ev) > 100 and len({e[s.IP] for e in ev}) <= len(res["accounts"])


def test_benign_users_are_heavy_tailed_and_varied(run: Run) -> None:
    benign = [a for a, v in run.truth["accounts"].items() if v["label"] == "benign"]
    counts = sorted(len(run.by_account[a]) for a in benign)
    assert counts[len(counts) // 2] < 20 < counts[-1]
    prompts = [e[s.PROMPT] for a in benign for e in run.by_account[a]]
    assert len(set(prompts)) > 0.7 * len(prompts)
    assert len({e[s.USER_AGENT] for a in benign for e in run.by_account[a]}) >= 10
    statuses = Counter(e[s.STATUS] for a in benign for e in run.by_account[a])
    assert statuses[200] > 0.9 * len(prompts) and statuses[429] > 0


def test_progress_is_reported(run: Run, progress_log: list[tuple[str, float]]) -> None:
    fractions = [f for _, f in progress_log]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert run.summary.first_ts >= datetime(2026, 5, 1, tzinfo=UTC)
    assert sum(run.summary.accounts_by_group.values()) == len(run.truth["accounts"])


def test_builtin_prompts_when_the_corpus_is_missing(tmp_path: Path) -> None:
    summary = simulate(seed=3, out_dir=tmp_path, corpus=tmp_path / "missing.jsonl.gz", accounts=300, days=0.5)
    r = Run(summary)
    assert r.truth["params"]["corpus"] == "builtin"
    assert set(r.truth["accounts"]) == set(r.by_account)
    benign = [e[s.PROMPT] for e in r.events if r.truth["accounts"][e[s.ACCOUNT_ID]]["label"] == "benign"]
    assert len(set(benign)) > 0.7 * len(benign)
    assert {c["style"] for c in r.truth["campaigns"]} >= {
        "bulk",
        "low_and_slow",
        "heavy",
        "evasive",
    }


def test_target_events_is_reached_with_more_people(tmp_path: Path) -> None:
    summary = simulate(seed=5, out_dir=tmp_path, target_events=30_000, **SMALL)
    assert summary.n_events == 30_000
    assert summary.accounts_by_label["benign"] > SMALL["accounts"]


def test_parquet_is_written_on_request(tmp_path: Path) -> None:
    import polars as pl

    summary = simulate(seed=9, out_dir=tmp_path, parquet=True, accounts=200, days=0.25)
    assert summary.parquet_path is not None
    frame = pl.read_parquet(summary.parquet_path)
    assert frame.height == summary.n_events
    assert frame.schema[s.TS] == s.TS_DTYPE


def test_a_one_hour_window_simulates_inside_its_bounds(tmp_path: Path) -> None:
    # accounts signing up in the last minutes of a short window used to get a negative session
    # count (numpy's poisson refused it): a short dense scenario crashed
    summary = simulate(seed=3, out_dir=tmp_path, accounts=400, days=1 / 24, target_events=20_000)
    r = Run(summary)
    start = _ms("2026-05-01T00:00:00.000Z")
    stamps = [_ms(e[s.TS]) for e in r.events]
    assert summary.n_events == len(r.events) > 10_000
    assert start <= min(stamps) and max(stamps) < start + DAY_MS // 24
