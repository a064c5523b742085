"""The clearinghouse and both utilities as separate servers on loopback ports, each with its
own SQLite database and credentials, joined only by HTTP (`evroam demo --processes`).

The seed scenarios run through them give exactly the result of the one-process run; the
roaming sessions (one per billing option, and one the other way) end on both utilities'
bills and in the settlement statement with the amounts computed by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from evroam.sim.bundled import example
from evroam.sim.processes import OverHttp, Servers
from evroam.sim.runner import Runner, RunResult
from evroam.sim.scenario import load_scenario

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    folder = tmp_path_factory.mktemp("parties")
    scenario = load_scenario(example("seed-scenarios.yaml"))
    territory_file = folder / "territory.yaml"
    territory_file.write_text(yaml.safe_dump(scenario.territory.model_dump(mode="json")))
    with Servers(territory_file, scenario.territory, folder, seed=scenario.seed) as running:
        yield running


@pytest.fixture(scope="module")
def over_http(servers: Servers) -> Iterator[RunResult]:
    parties = OverHttp(servers)
    try:
        yield Runner(load_scenario(example("seed-scenarios.yaml")), parties=parties).run()
    finally:
        parties.close()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    from evroam.db.engine import make_engine
    from evroam.db.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('one') / 'one.db'}")
    upgrade(engine)
    try:
        return Runner(load_scenario(example("seed-scenarios.yaml")), engine).run()
    finally:
        engine.dispose()


def test_separate_processes_give_the_one_process_result(
    over_http: RunResult, in_process: RunResult
) -> None:
    assert over_http.as_json() == in_process.as_json()
    assert over_http.undelivered == 0 and over_http.dead_letters == []


def test_roaming_ends_on_both_bills_and_in_the_statement(over_http: RunResult) -> None:
    bills = {b["account"]: b for b in over_http.bills}

    def roaming(account: str) -> dict[str, Any]:
        return {
            line["description"]: line["amount"]
            for line in bills[account]["lines"]
            if line["description"].startswith("Roaming")
        }

    # Gina (MHE) at PGX's mall: as a guest the claim, 7.2 kWh x 0.32 = 2.30; on her home
    # TOU, 3.6 kWh x 0.31 = 1.12 on-peak and 3.6 kWh x 0.09 = 0.32 off-peak (Denver time).
    at = "Roaming charging at PGX-P-MALL (Pacific Grid & Electric)"
    assert roaming("MHE-A-3001") == {
        f"{at}, guest": "2.30",
        f"{at}, on-peak at 0.31000 USD/kWh": "1.12",
        f"{at}, off-peak at 0.09000 USD/kWh": "0.32",
    }
    # Alice (PGX) at MHE's garage as a guest: 5 kWh x 0.29 = 1.45.
    assert roaming("PGX-A-1001") == {
        "Roaming charging at MHE-P-DEPOT (Mile High Electric), guest": "1.45"
    }
    # MHE owes 2.30 + 2.30, PGX owes 1.45: MHE pays PGX 3.15.
    assert over_http.settlement == [
        {
            "period": "2026-03",
            "payer_utility": "MHE",
            "payee_utility": "PGX",
            "amount": "3.15",
            "currency": "USD",
        }
    ]


def test_each_utility_database_holds_only_its_own_registry(
    servers: Servers, over_http: RunResult
) -> None:
    from sqlalchemy import select

    from evroam.db import schema as s
    from evroam.db.engine import make_engine

    for name, server in servers.utilities.items():
        engine = make_engine(server.db_url)
        with engine.connect() as conn:
            pevs = {r[0] for r in conn.execute(select(s.pevs.c.utility_id))}
            sessions = {r[0] for r in conn.execute(select(s.sessions.c.utility_id))}
        engine.dispose()
        assert pevs == {name} and sessions == {name}


def test_the_servers_are_real_processes(servers: Servers) -> None:
    pids = {s.process.pid for s in [*servers.utilities.values(), servers.clearinghouse] if s}
    assert len(pids) == 3
    for server in [*servers.utilities.values(), servers.clearinghouse]:
        assert server is not None
        assert httpx.get(f"{server.url}/health").status_code == 200
    assert Path(servers.utilities["PGX"].db_url.removeprefix("sqlite:///")).is_file()
