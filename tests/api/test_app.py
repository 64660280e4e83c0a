"""The API over a replayed database, on SQLite and on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_fixtures import database
from conftest import corpus_path
from fastapi.testclient import TestClient
from sim_fixtures import Replayed, replay_into, simulate_small

from api.app import create_app, decode_cursor, encode_cursor
from core.db import make_engine, make_sessionmaker, transaction
from core.settings import Settings
from detector import keys


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_small(tmp_path_factory.mktemp("sim"), corpus_path())


# these tests only read, so one replay per backend serves the whole module
@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def replayed(
    request: pytest.FixtureRequest, sim_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replayed]:
    databases = database(request, tmp_path_factory.mktemp("api-db"))
    url = next(databases)
    yield replay_into(sim_dir, url)
    databases.close()  # runs the generator's cleanup (drops the PostgreSQL database)


def _analyst_key(url: str) -> str:
    engine = make_engine(url)
    with transaction(make_sessionmaker(engine)) as session:
        _, token = keys.create_key("test-analyst", "analyst", session=session)
    engine.dispose()
    return token


@pytest.fixture
def client(replayed: Replayed) -> Iterator[TestClient]:
    app = create_app(
        Settings(database_url=replayed.database_url, api_rate_limit_burst=10_000, api_runtime_tuning=False)
    )
    with TestClient(app, headers={"Authorization": f"Bearer {_analyst_key(replayed.database_url)}"}) as c:
        yield c
    app.state.engine.dispose()


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz", headers={"Authorization": ""})
    assert r.status_code == 200
    assert r.json()["database"] == "ok"
    assert r.json()["schema_revision"]


def test_alerts_match_the_report(client: TestClient, replayed: Replayed) -> None:
    # every account the replay ever flagged has an alert; one released since (the report's
    # flagged: false) keeps it, with the detector's action back at allow for the gateway
    ever = {a["account_id"]: a for a in replayed.report["accounts"] if a["first_flagged_ts"]}
    flagged = {acct for acct, a in ever.items() if a["flagged"]}
    r = client.get("/v1/alerts", params={"limit": 500})
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == len(ever) > 0 and flagged
    got = {a["account_id"]: a for a in body["items"]}
    assert set(got) == set(ever)
    assert {acct for acct, alert in got.items() if alert["action"] != "allow"} == flagged
    for acct, alert in got.items():
        assert alert["ring_id"] == ever[acct]["ring_id"]
        assert alert["action"] == ever[acct]["action"]
        assert alert["status"] == "open"
        assert alert["reasons"]


def test_cursor_pagination_walks_every_alert_once(client: TestClient) -> None:
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/alerts", params=params).json()
        seen.extend(a["id"] for a in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == body["total"]
    assert seen == sorted(seen, reverse=True)


def test_filters(client: TestClient, replayed: Replayed) -> None:
    ring = replayed.report["rings"][0]
    body = client.get("/v1/alerts", params={"ring_id": ring["ring_id"], "limit": 500}).json()
    assert body["total"] == ring["size"]
    assert {a["ring_id"] for a in body["items"]} == {ring["ring_id"]}
    acct = body["items"][0]["account_id"]
    one = client.get("/v1/alerts", params={"account_id": acct}).json()
    assert [a["account_id"] for a in one["items"]] == [acct]
    for sev in ("low", "medium", "high", "critical"):
        items = client.get("/v1/alerts", params={"severity": sev, "limit": 500}).json()["items"]
        assert all(a["severity"] == sev for a in items)
    assert client.get("/v1/alerts", params={"status": "resolved"}).json()["total"] == 0
    first = min(a["first_flagged_ts"] for a in replayed.report["accounts"])
    early = client.get("/v1/alerts", params={"until": first, "limit": 500}).json()
    assert early["total"] == 0
    late = client.get("/v1/alerts", params={"since": first, "limit": 500}).json()
    assert late["total"] == len(replayed.report["accounts"])


def test_alert_detail_and_404(client: TestClient) -> None:
    first = client.get("/v1/alerts", params={"limit": 1}).json()["items"][0]
    r = client.get(f"/v1/alerts/{first['id']}")
    assert r.status_code == 200
    detail = r.json()
    # the detail is the list item plus evidence, timeline, history, labels and decision
    assert {k: detail[k] for k in first} == first
    assert detail["timeline"] and detail["timeline"][-1]["n_events"] == first["n_events"]
    assert detail["decision"]["action"] == first["action"]
    r = client.get("/v1/alerts/999999999")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "999999999" in r.json()["detail"]


def test_rings(client: TestClient, replayed: Replayed) -> None:
    rings = client.get("/v1/rings").json()
    assert {r["ring_id"] for r in rings} == {r["ring_id"] for r in replayed.report["rings"]}
    top = replayed.report["rings"][0]
    detail = client.get(f"/v1/rings/{top['ring_id']}").json()
    assert sorted(detail["members"]) == sorted(top["members"])
    assert detail["evidence"] == top["evidence"]
    assert client.get("/v1/rings/r-nope").status_code == 404


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/alerts", {"limit": 0}),
        ("/v1/alerts", {"limit": 100000}),
        ("/v1/alerts", {"limit": "many"}),
        ("/v1/alerts", {"severity": "apocalyptic"}),
        ("/v1/alerts", {"status": "closed"}),
        ("/v1/alerts", {"since": "not a date"}),
        ("/v1/alerts", {"cursor": "garbage!!"}),
        ("/v1/alerts", {"since": "2026-05-01T00:00:00"}),
        ("/v1/alerts/not-a-number", {}),
        ("/v1/alerts", {"account_id": "x" * 500}),
    ],
)
def test_bad_input_is_a_4xx_problem_never_a_500(client: TestClient, path: str, params: dict) -> None:
    r = client.get(path, params=params)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == r.status_code and body["detail"]


def test_unknown_route_is_a_problem_404(client: TestClient) -> None:
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(12345)) == 12345
