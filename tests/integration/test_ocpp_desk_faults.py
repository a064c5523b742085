"""The utility's OCPP desk against faulty and hostile stations (issue 15), without sockets.

The desk (`TransactionDesk`) is called as the CSMS's worker thread calls it. Territory: the
example with stations at Alice's home (PGX-P-ALICE, TOU program, EUMD every 15 min) and at
Acme's workplace (PGX-P-ACME, host pays). Tuesday 2026-03-03 22:00-24:00 in Los Angeles
(PST) is 2026-03-04 06:00-08:00 UTC: off-peak, PGX-EV-TOU at 0.12000 a kWh; Alice's bill
also carries the TOU program's 2.00 a month. Every amount is worked out by hand below.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select, text

from evroam.core.clock import FixedClock
from evroam.db import schema as s
from evroam.protocols.ocpp.mapping import RegisterSample
from evroam.protocols.ocpp.port import EventIn, SamplesIn, StartIn, StopIn
from evroam.territory.loader import load_territory
from evroam.territory.store import save_territory
from evroam.utility.bill_store import issue_cycle
from evroam.utility.ocpp_desk import TransactionDesk
from evroam.utility.service import UtilityService
from tests.conftest import example_document, write_document
from tests.e2e.test_ocpp_stations import ACME_CS, ALICE_CS, with_stations

BOOT = datetime(2026, 3, 4, 5, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 4, 6, 0, tzinfo=UTC)  # Tue 22:00 PST, off-peak
QUARTER = timedelta(minutes=15)
BIG = 3_000_000_000  # Wh: a busy DC station's lifetime register, past 2^31


@dataclass
class Site:
    engine: Engine
    clock: FixedClock
    service: UtilityService
    desk: TransactionDesk


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Site:
    territory = load_territory(
        write_document(tmp_path / "t.yaml", with_stations(example_document()))
    )
    with engine.begin() as conn:
        save_territory(conn, territory)
    clock = FixedClock(BOOT)
    service = UtilityService(engine, "PGX", clock, random_delay_max_s=0)
    desk = TransactionDesk(service)
    for station in (ALICE_CS, ACME_CS):
        desk.boot(station, "1.6", {"vendor": "V", "model": "M1"})
    clock.set(T0 + timedelta(hours=3))  # what follows was queued offline, stamped earlier
    return Site(engine, clock, service, desk)


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def start16(site: Site, station: str, at: datetime, register_wh: int, pev: str) -> str:
    reply = site.desk.start_v16(station, StartIn(1, pev, register_wh, stamp(at), at))
    return reply.transaction_ref


def meter(ref: str, at: datetime, register_wh: int) -> SamplesIn:
    """A 1.6 MeterValues of one register sample."""
    payload = {"connector_id": 1, "transaction_id": int(ref), "register": register_wh}
    return SamplesIn(ref, 1, [RegisterSample(at, register_wh)], (), payload)


def stop16(site: Site, station: str, ref: str, at: datetime, register_wh: int) -> None:
    site.desk.stop(station, StopIn(ref, register_wh, stamp(at), at, "EVDisconnected", None))


def bills(site: Site) -> dict[str, list[tuple[str, int, Decimal]]]:
    """Issue March's bills: (kind, Wh, amount) of each line, by account."""
    with site.engine.begin() as conn:
        issued = issue_cycle(
            conn, site.service.registry().utility, "2026-03", site.clock() + timedelta(days=40)
        )
    return {b.account_id: [(x.kind, x.energy_wh, x.amount) for x in b.lines] for b in issued}


def bill_lines(site: Site, account: str) -> list[tuple[str, int, Decimal]]:
    return bills(site)[account]


def metered_wh(site: Site, premise: str) -> int:
    readings = s.interval_readings
    with site.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(readings.c.energy_wh), 0)).where(
                    readings.c.premise_id == premise
                )
            ).scalar_one()
        )


def quarantined(site: Site) -> list[tuple[str, str, str | None]]:
    q = s.ocpp_quarantine
    with site.engine.connect() as conn:
        rows = conn.execute(
            select(q.c.station_id, q.c.reason, q.c.transaction_ref).order_by(q.c.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


# --- 64-bit registers ------------------------------------------------------------------------


def test_a_register_past_2_31_wh_bills_exactly_its_rise(site: Site) -> None:
    ref = start16(site, ALICE_CS, T0, BIG, "PGX-PEV-ALICE")
    for k, rise in enumerate([1850, 3700, 5550], start=1):
        site.desk.samples_many([ALICE_CS], [meter(ref, T0 + k * QUARTER, BIG + rise)])
    stop16(site, ALICE_CS, ref, T0 + 4 * QUARTER, BIG + 7400)

    with site.engine.connect() as conn:
        tx = conn.execute(select(s.ocpp_transactions)).mappings().one()
        samples = conn.execute(select(s.ocpp_meter_samples.c.register_wh)).scalars().all()
    assert (tx["meter_start_wh"], tx["stop_register_wh"], tx["energy_wh"]) == (
        BIG,
        BIG + 7400,
        7400,
    )
    assert sorted(samples) == [BIG + 1850, BIG + 3700, BIG + 5550, BIG + 7400]
    assert metered_wh(site, "PGX-P-ALICE") == 7400
    assert quarantined(site) == []
    # 7.4 kWh off-peak x 0.12000 = 0.888 -> 0.89, and the TOU program's 2.00
    assert bill_lines(site, "PGX-A-1001") == [
        ("energy", 7400, Decimal("0.89")),
        ("program_charge", 0, Decimal("2.00")),
    ]


# --- a lower register is a reset only after a restart ----------------------------------------


def resets(site: Site) -> list[tuple[int, int]]:
    r = s.ocpp_register_resets
    with site.engine.connect() as conn:
        rows = conn.execute(select(r.c.register_before_wh, r.c.register_after_wh).order_by(r.c.id))
        return [(before, after) for before, after in rows]


def run16(site: Site, registers: list[int | str], stop_register: int) -> str:
    """A 1.6 transaction at Alice's home from 1000 Wh at T0: one MeterValues a quarter hour
    per register, "boot" for a BootNotification, then the stop a quarter after the last."""
    ref = start16(site, ALICE_CS, T0, 1000, "PGX-PEV-ALICE")
    k = 0
    for register in registers:
        if register == "boot":
            site.clock.advance(timedelta(minutes=1))
            site.desk.boot(ALICE_CS, "1.6", {"vendor": "V", "model": "M1"})
            continue
        k += 1
        site.desk.samples_many([ALICE_CS], [meter(ref, T0 + k * QUARTER, int(register))])
    stop16(site, ALICE_CS, ref, T0 + (k + 1) * QUARTER, stop_register)
    return ref


def test_a_late_lower_register_is_quarantined_and_never_billed(site: Site) -> None:
    # 1000 at the start, 1500, 1200 (a late sample stamped after 1500), 2000 at the stop:
    # the register rose 2000 - 1000 = 1000 Wh; taken for a reset it billed 2500
    ref = run16(site, [1500, 1200], 2000)
    assert quarantined(site) == [(ALICE_CS, "register_lower", ref)]
    assert resets(site) == []
    assert metered_wh(site, "PGX-P-ALICE") == 1000
    # 1 kWh off-peak x 0.12000 = 0.12
    assert bill_lines(site, "PGX-A-1001")[0] == ("energy", 1000, Decimal("0.12"))


def test_a_lower_register_after_a_boot_is_a_reset_counted_from_itself(site: Site) -> None:
    # 1000, 1500, the station restarts (BootNotification), 200, 700 at the stop:
    # 500 before the restart + 500 after it = 1000 Wh
    run16(site, [1500, "boot", 200], 700)
    assert quarantined(site) == []
    assert resets(site) == [(1500, 200)]
    assert metered_wh(site, "PGX-P-ALICE") == 1000
    assert bill_lines(site, "PGX-A-1001")[0] == ("energy", 1000, Decimal("0.12"))


def test_one_restart_resets_a_register_once(site: Site) -> None:
    # after the reset to 200, a lower 150 with no new boot is set aside: 500 + (700 - 200)
    ref = run16(site, [1500, "boot", 200, 150], 700)
    assert resets(site) == [(1500, 200)]
    assert quarantined(site) == [(ALICE_CS, "register_lower", ref)]
    assert metered_wh(site, "PGX-P-ALICE") == 1000


def test_a_lower_stop_register_without_a_restart_is_quarantined(site: Site) -> None:
    # 1000, 1500, 1800, then a stop reading 1600: billed 800, the stop set aside
    ref = run16(site, [1500, 1800], 1600)
    assert quarantined(site) == [(ALICE_CS, "register_lower", ref)]
    assert metered_wh(site, "PGX-P-ALICE") == 800
    with site.engine.connect() as conn:
        assert conn.execute(select(s.sessions.c.reported_energy_wh)).scalar_one() == 800


# --- one failing message never fails the rest of its group commit ----------------------------

POISON_WH = 1_234_567  # a register value the database is made to refuse, below


def poison_the_samples_table(engine: Engine) -> None:
    """A trigger refusing one register value: a message whose storing fails whatever it
    is retried with (what a 2^31 register was on PostgreSQL's int4)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION evroam_test_poison() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.register_wh = {POISON_WH} THEN RAISE EXCEPTION 'poisoned'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER evroam_test_poison BEFORE INSERT ON ocpp_meter_samples "
                    "FOR EACH ROW EXECUTE FUNCTION evroam_test_poison()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER evroam_test_poison BEFORE INSERT ON ocpp_meter_samples "
                    f"WHEN NEW.register_wh = {POISON_WH} BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
                )
            )


def test_a_poison_message_fails_alone_and_its_group_commits(site: Site) -> None:
    poison_the_samples_table(site.engine)
    alice = start16(site, ALICE_CS, T0, 1000, "PGX-PEV-ALICE")
    acme = start16(site, ACME_CS, T0, 50_000, "PGX-PEV-BOB")
    # one group commit: Acme's two quarters around Alice's poisoned sample
    outcomes = site.desk.samples_many(
        [ACME_CS, ALICE_CS, ACME_CS],
        [
            meter(acme, T0 + QUARTER, 51_800),
            meter(alice, T0 + QUARTER, POISON_WH),
            meter(acme, T0 + 2 * QUARTER, 53_600),
        ],
    )
    assert outcomes == [None, None, None]  # all acknowledged: the poison is set aside
    assert [(q[0], q[1], q[2]) for q in quarantined(site)] == [(ALICE_CS, "store_failed", alice)]
    with site.engine.connect() as conn:
        samples = conn.execute(
            select(s.ocpp_meter_samples.c.station_id, s.ocpp_meter_samples.c.register_wh)
        ).all()
    assert sorted(tuple(r) for r in samples) == [(ACME_CS, 51_800), (ACME_CS, 53_600)]
    assert metered_wh(site, "PGX-P-ACME") == 3600
    # Alice's later samples go on from her last stored register (1000)
    site.desk.samples_many([ALICE_CS], [meter(alice, T0 + 2 * QUARTER, 2800)])
    stop16(site, ALICE_CS, alice, T0 + 3 * QUARTER, 3700)
    stop16(site, ACME_CS, acme, T0 + 3 * QUARTER, 55_400)
    assert metered_wh(site, "PGX-P-ALICE") == 2700
    assert metered_wh(site, "PGX-P-ACME") == 5400
    issued = bills(site)
    # Acme hosts Bob's PEV and pays at its program's rate, off-peak 0.12000:
    # 5.4 kWh = 0.648 -> 0.65
    assert issued["PGX-A-2003"] == [("energy", 5400, Decimal("0.65"))]
    # Alice at home, off-peak 0.12000: 2.7 kWh = 0.324 -> 0.32, and the TOU program's 2.00
    assert issued["PGX-A-1001"] == [
        ("energy", 2700, Decimal("0.32")),
        ("program_charge", 0, Decimal("2.00")),
    ]


def test_a_group_the_database_cannot_take_at_all_is_answered_not_stored(site: Site) -> None:
    """The database gone: nothing to isolate, every message is answered InternalError and
    sent again by its station; none is quarantined as poison."""
    alice = start16(site, ALICE_CS, T0, 1000, "PGX-PEV-ALICE")
    healthy = site.desk.engine
    site.desk.engine = create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none"
        if healthy.dialect.name == "postgresql"
        else "sqlite:////nonexistent-dir/evroam.db"
    )
    outcomes = site.desk.samples_many(
        [ALICE_CS, ALICE_CS],
        [meter(alice, T0 + QUARTER, 2800), meter(alice, T0 + 2 * QUARTER, 4600)],
    )
    site.desk.engine = healthy
    assert [o is not None and o.startswith("not stored") for o in outcomes] == [True, True]
    assert quarantined(site) == []
    site.desk.samples_many([ALICE_CS], [meter(alice, T0 + 2 * QUARTER, 4600)])  # sent again
    stop16(site, ALICE_CS, alice, T0 + 3 * QUARTER, 5500)
    assert metered_wh(site, "PGX-P-ALICE") == 4500


def event201(
    ref: str, kind: str, seq: int, at: datetime, register_wh: int, token: str | None = None
) -> EventIn:
    """A 2.0.1 TransactionEvent at EVSE 1 carrying one register sample."""
    context = {"Started": "Transaction.Begin", "Ended": "Transaction.End"}.get(kind)
    return EventIn(
        event_type=kind,
        transaction_ref=ref,
        seq_no=seq,
        stamped=stamp(at),
        at=at,
        trigger_reason="MeterValuePeriodic",
        offline=False,
        evse_id=1,
        pev_id=token,
        has_token=token is not None,
        stopped_reason="EVDisconnected" if kind == "Ended" else None,
        samples=[RegisterSample(at, register_wh, context)],
        payload={"seq_no": seq, "register": register_wh},
    )


def grouped(event: EventIn) -> SamplesIn:
    """A TransactionEvent as the edge hands it to the group commit."""
    return SamplesIn(event.transaction_ref, 1, event.samples, (), None, event)


def test_an_event_committing_on_its_own_in_a_failed_group_loses_no_reading(site: Site) -> None:
    """Acme's Updated seqNo 1 joins the group; seqNo 2 carries an idToken, so it takes the
    general path and commits on its own, reading seqNo 1's chain: seqNo 1 must be stored
    before it. Then Alice's poison fails the group, which is stored again in halves."""
    poison_the_samples_table(site.engine)
    alice = start16(site, ALICE_CS, T0, 1000, "PGX-PEV-ALICE")
    site.desk.event(ACME_CS, event201("TX-A", "Started", 0, T0, 50_000))
    outcomes = site.desk.samples_many(
        [ACME_CS, ACME_CS, ALICE_CS],
        [
            grouped(event201("TX-A", "Updated", 1, T0 + QUARTER, 51_800)),
            grouped(event201("TX-A", "Updated", 2, T0 + 2 * QUARTER, 53_600, "PGX-PEV-BOB")),
            meter(alice, T0 + QUARTER, POISON_WH),
        ],
    )
    assert outcomes == [None, None, None]
    site.desk.event(ACME_CS, event201("TX-A", "Ended", 3, T0 + 3 * QUARTER, 55_400))
    assert [q[1] for q in quarantined(site)] == ["store_failed"]
    assert metered_wh(site, "PGX-P-ACME") == 5400  # 1800 a quarter, none lost
    with site.engine.connect() as conn:
        gaps = conn.execute(select(func.count()).select_from(s.ocpp_seq_gaps)).scalar_one()
    assert gaps == 0
