"""The gateway's outbox: a poison message never blocks the queue, refused credentials never
dead-letter it, dead letters can be re-queued, and a restarted gateway can end its sessions.

The utility is a fake link here (the fast layer); tests/e2e/test_gateway_process.py drives
the same through a real server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from evroam.core.messages import (
    BindRequest,
    BindResult,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    ScheduleUpdates,
    SessionReport,
)
from evroam.gateway.gateway import Gateway, GatewayConfig
from evroam.gateway.outbox import Outbox
from evroam.transport import NotAuthorized, UtilityRefused, _detail, refusal

T0 = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
PREMISE, EUMD, PORTAL = "PGX-P-ALICE", "PGX-EUMD-ALICE", "PGX-EP-ALICE-1"


class FakeUtility:
    """Accepts everything except readings of the poisoned Wh values; `token_ok` False
    answers every call with 401, as a utility does after the gateway's token was rotated."""

    def __init__(self, poison_wh: Sequence[int] = ()) -> None:
        self.poison_wh = set(poison_wh)
        self.token_ok = True
        self.readings: list[IntervalReading] = []
        self.reports: list[SessionReport] = []
        self.calls = 0

    def _auth(self) -> None:
        self.calls += 1
        if not self.token_ok:
            raise NotAuthorized(401, "unknown or missing gateway token")

    def bind(self, request: BindRequest, eumd_ok: bool) -> BindResult:
        self._auth()
        return BindResult(
            session_id=request.session_id, bound=True, incentive=True, case="home", message="ok"
        )

    def request_energy(self, request: EnergyRequest) -> EnergyAvailable:
        raise AssertionError("not asked in these tests")

    def send_readings(self, readings: Sequence[IntervalReading]) -> int:
        self._auth()
        for i, r in enumerate(readings):
            if r.energy_wh in self.poison_wh:  # the batch is applied whole or not at all
                raise UtilityRefused(422, f"readings[{i}].energy_wh: refused")
        self.readings += readings
        return len(readings)

    def report_session(self, report: SessionReport) -> None:
        self._auth()
        self.reports.append(report)

    def schedules(self, after: int, limit: int) -> ScheduleUpdates:
        self._auth()
        return ScheduleUpdates(updates=[], cursor=after)


def gateway(outbox: Outbox, link: FakeUtility) -> Gateway:
    return Gateway(GatewayConfig(PREMISE, EUMD, 900, {PORTAL: 7200}), link, outbox)


def charge(gw: Gateway, session_id: str, energies: Sequence[int]) -> None:
    gw.plug_in(session_id, PORTAL, "PGX-PEV-ALICE", T0)
    for k, wh in enumerate(energies):
        gw.meter(session_id, T0 + timedelta(minutes=15 * k), wh)


def test_one_refused_reading_is_set_aside_and_the_rest_flow_on(tmp_path: Path) -> None:
    link = FakeUtility(poison_wh=[666])
    gw = gateway(Outbox(tmp_path / "o.db"), link)
    energies = [100, 200, 300, 400, 666, 500, 600, 700, 800, 900]
    charge(gw, "S1", energies)
    gw.plug_out("S1", T0 + timedelta(hours=3))
    charge(gw, "S2", [1000, 1100])
    gw.plug_out("S2", T0 + timedelta(hours=4))

    delivered = gw.flush()

    assert sorted(r.energy_wh for r in link.readings) == sorted(
        [e for e in energies if e != 666] + [1000, 1100]
    )
    assert [r.session_id for r in link.reports] == ["S1", "S2"]
    assert delivered == 9 + 1 + 2 + 1
    (letter,) = gw.outbox.dead_letters()
    assert letter.kind == "reading"
    assert json.loads(letter.payload)["energy_wh"] == 666
    assert "HTTP 422" in letter.reason and "readings[0].energy_wh" in letter.reason
    assert len(gw.outbox) == 0


def test_refused_credentials_hold_the_queue_and_bury_nothing(tmp_path: Path) -> None:
    link = FakeUtility()
    gw = gateway(Outbox(tmp_path / "o.db"), link)
    charge(gw, "S1", [100, 200, 300])
    gw.plug_out("S1", T0 + timedelta(hours=1))
    link.token_ok = False

    assert gw.flush() == 0
    assert gw.flush() == 0  # and again: nothing moves, nothing is set aside

    assert gw.held is not None and "401" in gw.held
    assert len(gw.outbox) == 4
    assert gw.outbox.dead_letters() == []
    link.token_ok = True  # the new token is in place
    assert gw.flush() == 4
    assert gw.held is None
    assert [r.energy_wh for r in link.readings] == [100, 200, 300]
    assert len(link.reports) == 1


def test_dead_letters_are_requeued_at_the_end_in_their_order(tmp_path: Path) -> None:
    link = FakeUtility(poison_wh=[7, 8])
    gw = gateway(Outbox(tmp_path / "o.db"), link)
    charge(gw, "S1", [7, 100, 8])
    gw.flush()
    assert [json.loads(d.payload)["energy_wh"] for d in gw.outbox.dead_letters()] == [7, 8]
    first, second = gw.outbox.dead_letters()

    link.poison_wh = set()  # the utility was corrected
    assert gw.outbox.requeue([second.seq]) == 1
    assert gw.flush() == 1
    assert gw.outbox.dead_letters() == [first]
    assert gw.outbox.requeue() == 1
    assert gw.flush() == 1
    assert gw.outbox.dead_letters() == []
    assert [r.energy_wh for r in link.readings] == [100, 8, 7]
    assert gw.outbox.requeue() == 0


def test_a_restarted_gateway_ends_the_session_it_started(tmp_path: Path) -> None:
    link = FakeUtility()
    first = gateway(Outbox(tmp_path / "o.db"), link)
    charge(first, "S1", [1800, 1750])
    first.outbox.close()  # the process dies here, mid-session

    again = gateway(Outbox(tmp_path / "o.db"), link)
    assert set(again.sessions) == {"S1"}
    again.meter("S1", T0 + timedelta(minutes=30), 1700)
    report = again.plug_out("S1", T0 + timedelta(minutes=45))

    assert report.energy_wh == 1800 + 1750 + 1700
    assert report.started_at == T0 and report.metered
    assert again.flush() == 4
    assert sum(r.energy_wh for r in link.readings) == report.energy_wh
    third = gateway(Outbox(tmp_path / "o.db"), link)
    assert third.sessions == {}  # the report and the end of the session were one write


@pytest.mark.parametrize(("status", "kind"), [(401, NotAuthorized), (403, NotAuthorized)])
def test_credential_statuses_are_not_message_refusals(status: int, kind: type) -> None:
    assert type(refusal(status, "x")) is kind


def test_a_plain_refusal_is_a_message_refusal() -> None:
    err = refusal(422, "bad")
    assert type(err) is UtilityRefused and err.status == 422


def test_a_refusal_without_json_keeps_a_short_excerpt() -> None:
    response = httpx.Response(400, text="<html>" + "x" * 5000)
    detail = _detail(response)
    assert isinstance(detail, str) and detail.startswith("<html>") and len(detail) == 200
    assert _detail(httpx.Response(422, json={"detail": "energy_wh: too large"})) == (
        "energy_wh: too large"
    )


def test_an_operator_lists_and_requeues_dead_letters(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evroam.cli import app

    link = FakeUtility(poison_wh=[7, 8])
    path = tmp_path / "o.db"
    gw = gateway(Outbox(path), link)
    charge(gw, "S1", [7, 100, 8])
    gw.flush()
    gw.outbox.close()
    runner = CliRunner()

    listed = runner.invoke(app, ["gateway", "dead-letters", "list", "--outbox", str(path)])
    assert listed.exit_code == 0, listed.output
    assert "#1 reading: HTTP 422: readings[0].energy_wh: refused" in listed.stdout
    assert "#3 reading" in listed.stdout and "2 dead letters" in listed.stdout
    as_json = runner.invoke(
        app, ["gateway", "dead-letters", "list", "--outbox", str(path), "--json"]
    )
    assert [json.loads(line)["seq"] for line in as_json.stdout.splitlines()] == [1, 3]

    one = runner.invoke(
        app, ["gateway", "dead-letters", "requeue", "--outbox", str(path), "--seq", "3"]
    )
    assert "requeued 1, 1 dead letters left" in one.stdout
    rest = runner.invoke(app, ["gateway", "dead-letters", "requeue", "--outbox", str(path)])
    assert "requeued 1, 0 dead letters left" in rest.stdout
    box = Outbox(path)
    assert len(box) == 2  # both back in the queue, for the next flush
    missing = runner.invoke(
        app, ["gateway", "dead-letters", "list", "--outbox", str(tmp_path / "nope")]
    )
    assert missing.exit_code == 2 and "--outbox: no such file" in missing.output
