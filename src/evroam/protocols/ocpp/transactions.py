"""The CSMS's transaction desk: OCPP transactions mapped onto bind, readings and reports.

One desk per process, used from one worker thread (``csms.DeskWorker``), so its caches
need no locks. Every method answers: what cannot be placed is quarantined and logged, and
the station still gets its acknowledgement (the reliability rules of docs/ocpp.md).

Crash safety without a shared transaction: the utility's calls are idempotent (same key,
same content -> the stored result), so the desk calls them first and records its own
state last. If the process dies in between, the station retries (it was not answered),
the desk recomputes the same readings and report from the state it had, and the utility
acknowledges them as duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update

from evroam.core.errors import Conflict, Refused
from evroam.core.messages import (
    BindRequest,
    EnergyAvailable,
    EnergyRequest,
    IntervalReading,
    SessionReport,
)
from evroam.db import schema as s
from evroam.protocols.ocpp import store
from evroam.protocols.ocpp.mapping import (
    Advance,
    BadSample,
    Chain,
    RegisterSample,
    advance,
    close,
    digest,
    implausible,
    session_id_for,
)
from evroam.protocols.ocpp.stations import StationInfo
from evroam.protocols.ocpp.store import Tx
from evroam.utility.readings_store import check_same, insert_new, reading_key
from evroam.utility.service import UtilityService

LOG = logging.getLogger("evroam.ocpp")


@dataclass(frozen=True)
class Reply:
    """What the station is told about a transaction (always Accepted: seed 1.4.1)."""

    transaction_id: int
    transaction_ref: str
    session_id: str
    bound: bool
    incentive: bool
    case: str | None
    message: str | None
    plan: EnergyAvailable | None = None  # a plan to push as a TxProfile after the answer


@dataclass(frozen=True)
class StartIn:
    """A transaction's start as a station reports it (1.6 StartTransaction)."""

    evse_id: int
    pev_id: str | None
    meter_start_wh: int | None
    stamped: str
    at: datetime | None  # None: the stamp could not be parsed


@dataclass(frozen=True)
class SamplesIn:
    transaction_ref: str | None  # None: sampled outside a transaction
    evse_id: int
    samples: Sequence[RegisterSample]
    bad: Sequence[BadSample] = ()
    payload: Any = None
    event: EventIn | None = None  # a 2.0.1 TransactionEvent Updated carrying them


@dataclass(frozen=True)
class StopIn:
    transaction_ref: str
    meter_stop_wh: int | None
    stamped: str
    at: datetime | None
    reason: str | None
    pev_id: str | None
    samples: Sequence[RegisterSample] = ()
    bad: Sequence[BadSample] = ()


@dataclass(frozen=True)
class EventIn:
    """A 2.0.1 TransactionEvent, typed."""

    event_type: str
    transaction_ref: str
    seq_no: int
    stamped: str
    at: datetime | None
    trigger_reason: str | None
    offline: bool
    evse_id: int | None
    pev_id: str | None
    has_token: bool
    stopped_reason: str | None
    samples: Sequence[RegisterSample] = ()
    bad: Sequence[BadSample] = ()
    payload: Any = None


@dataclass(frozen=True)
class ProfilePush:
    """A plan to send to a station as a TxProfile."""

    station_id: str
    protocol: str
    evse_id: int
    transaction_id: int
    transaction_ref: str
    available: EnergyAvailable


@dataclass
class _Batch:
    """What one group commit writes."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    resets: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    readings: dict[str, list[IntervalReading]] = field(default_factory=dict)
    touched: dict[int, Tx] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    filled: list[dict[str, Any]] = field(default_factory=list)


class TransactionDesk:
    def __init__(
        self,
        service: UtilityService,
        stations: dict[str, StationInfo],
        *,
        v16_default_energy_wh: int | None = 30_000,
        default_dwell: timedelta = timedelta(hours=8),
    ) -> None:
        self.service = service
        self.engine: Engine = service.engine
        self.stations = stations
        self.v16_default_energy_wh = v16_default_energy_wh
        self.default_dwell = default_dwell
        self._txs: dict[tuple[str, str], Tx] = {}
        self._first_sync: dict[str, datetime | None] = {}
        self._pushed: dict[tuple[str, str], EnergyAvailable] = {}
        self.schedule_cursor: int | None = None

    # --- station facts ------------------------------------------------------------------

    def boot(self, station_id: str, protocol: str, facts: dict[str, str | None]) -> datetime:
        """Record a BootNotification; the answer's currentTime syncs the station's clock."""
        now = self.service.clock()
        with self.engine.begin() as conn:
            self._first_sync[station_id] = store.record_boot(conn, station_id, protocol, facts, now)
        return now

    def status(
        self,
        station_id: str,
        evse_id: int,
        connector_id: int,
        status: str,
        error_code: str | None,
        at: datetime | None,
    ) -> None:
        with self.engine.begin() as conn:
            store.record_status(
                conn,
                {
                    "station_id": station_id,
                    "evse_id": evse_id,
                    "connector_id": connector_id,
                    "status": status[:32],
                    "error_code": (error_code or None) and error_code[:64],
                    "status_at": at,
                    "received_at": self.service.clock(),
                },
            )

    def quarantine(
        self,
        station_id: str,
        action: str,
        reason: str,
        detail: str,
        payload: Any,
        *,
        transaction_ref: str | None = None,
        stamped_at: datetime | None = None,
    ) -> None:
        LOG.warning("%s %s quarantined: %s (%s)", station_id, action, reason, detail)
        with self.engine.begin() as conn:
            conn.execute(
                insert(s.ocpp_quarantine).values(
                    store.quarantine_row(
                        station_id,
                        action,
                        reason,
                        detail,
                        payload,
                        self.service.clock(),
                        transaction_ref=transaction_ref,
                        stamped_at=stamped_at,
                    )
                )
            )

    def _sync_of(self, station_id: str) -> datetime | None:
        if station_id not in self._first_sync:
            with self.engine.connect() as conn:
                self._first_sync[station_id] = store.first_sync(conn, station_id)
        return self._first_sync[station_id]

    def _check(self, station_id: str, at: datetime) -> str | None:
        return implausible(at, self.service.clock(), self._sync_of(station_id))

    # --- transactions: start ----------------------------------------------------------------

    def start_v16(self, station: StationInfo, start: StartIn) -> Reply:
        """StartTransaction: a new transaction id, or the same one for a retry."""
        key = digest(start.evse_id, start.pev_id, start.meter_start_wh, start.stamped)
        with self.engine.connect() as conn:
            tx = store.load_tx_by_start(conn, station.id, key)
        if tx is None:
            tx = self._open(station, "1.6", None, start.evse_id, start.pev_id, start, key)
        self._txs[(station.id, tx.transaction_ref)] = tx
        self._bind(station, tx, start.pev_id)
        plan = None
        if tx.bound and self.v16_default_energy_wh:
            # 1.6 carries no Energy Request: plan a default one (docs/ocpp.md)
            plan = self._request(
                station,
                tx,
                EnergyRequest(
                    session_id=tx.session_id,
                    energy_wh=self.v16_default_energy_wh,
                    max_w=self._portal_w(tx.portal_id),
                    departure_at=tx.started_at + self.default_dwell,
                ),
            )
        return self._reply(tx, plan)

    def _open(
        self,
        station: StationInfo,
        protocol: str,
        transaction_ref: str | None,
        evse_id: int,
        pev_id: str | None,
        start: StartIn,
        start_key: str | None,
    ) -> Tx:
        now = self.service.clock()
        at = start.at
        problem = "bad_timestamp" if at is None else self._check(station.id, at)
        if at is None or problem is not None:
            self.quarantine(
                station.id,
                "TransactionStart",
                problem or "bad_timestamp",
                f"start stamped {start.stamped!r}: the session starts at its receipt instead",
                {"stamped": start.stamped, "evse_id": evse_id},
                transaction_ref=transaction_ref,
                stamped_at=at,
            )
            at = now
        portal = station.portal(evse_id)
        if portal is None:
            # Still a session at this premise: the premise pays at its default (seed 1.4.1).
            self.quarantine(
                station.id,
                "TransactionStart",
                "unknown_evse",
                f"EVSE {evse_id} is not registered for {station.id}",
                {"evse_id": evse_id},
                transaction_ref=transaction_ref,
            )
            portal = f"{station.id}#{evse_id}"[:64]
        row: dict[str, Any] = {
            "station_id": station.id,
            "transaction_ref": transaction_ref or start_key or "",
            "protocol": protocol,
            "premise_id": station.premise_id,
            "session_id": session_id_for(station.id, transaction_ref or "?"),
            "evse_id": evse_id,
            "portal_id": portal,
            "id_token": pev_id,
            "start_key": start_key,
            "started_at": at,
            "meter_start_wh": start.meter_start_wh,
            "bind_done": False,
            "bound": False,
            "incentive": False,
            "case": None,
            "message": None,
            "stopped": False,
            "stopped_at": None,
            "stop_register_wh": None,
            "stop_reason": None,
            "reported": False,
            "max_seq_no": -1,
            "received_at": now,
        }
        chain = Chain.start(at, start.meter_start_wh, station.interval_s)
        row |= {
            "last_at": chain.last_at,
            "last_register_wh": chain.last_register_wh,
            "energy_wh": 0,
            "boundary_at": chain.boundary_at,
            "boundary_wh": 0,
        }
        with self.engine.begin() as conn:
            tx_id = store.insert_tx(conn, row)
            if transaction_ref is None:  # 1.6: the CSMS names the transaction
                row["transaction_ref"] = str(tx_id)
                row["session_id"] = session_id_for(station.id, str(tx_id))
            else:
                row["session_id"] = session_id_for(station.id, transaction_ref)
            conn.execute(
                update(s.ocpp_transactions)
                .where(s.ocpp_transactions.c.id == tx_id)
                .values(transaction_ref=row["transaction_ref"], session_id=row["session_id"])
            )
        return Tx(id=tx_id, **{k: v for k, v in row.items() if k != "id"})

    def _bind(self, station: StationInfo, tx: Tx, pev_id: str | None) -> None:
        """Bind once, when the PEV's ID is known (or at the end, without one)."""
        if tx.bind_done:
            return
        request = BindRequest(
            session_id=tx.session_id,
            premise_id=station.premise_id,
            portal_id=tx.portal_id,
            pev_id=pev_id,
            plugged_in_at=tx.started_at,
        )
        try:
            result = self.service.bind(
                station.premise_id, request, eumd_ok=station.eumd_id is not None
            )
        except Refused as err:
            self.quarantine(
                station.id,
                "Bind",
                "refused",
                str(err),
                request.model_dump(mode="json"),
                transaction_ref=tx.transaction_ref,
            )
            return
        tx.id_token, tx.bind_done = pev_id, True
        tx.bound, tx.incentive, tx.case, tx.message = (
            result.bound,
            result.incentive,
            result.case,
            result.message[:200],
        )
        with self.engine.begin() as conn:
            store.save_states(conn, [tx])

    def _request(
        self, station: StationInfo, tx: Tx, request: EnergyRequest
    ) -> EnergyAvailable | None:
        try:
            plan = self.service.request_energy(station.premise_id, request)
        except Refused as err:
            LOG.warning("%s: energy request for %s refused: %s", station.id, tx.session_id, err)
            return None
        self._pushed[(tx.premise_id, tx.session_id)] = plan
        return plan

    def _portal_w(self, portal_id: str) -> int:
        found = self.service.registry().portals.get(portal_id)
        return found[1].rating_w() if found else 7200

    @staticmethod
    def _reply(tx: Tx, plan: EnergyAvailable | None = None) -> Reply:
        return Reply(
            tx.id,
            tx.transaction_ref,
            tx.session_id,
            tx.bound,
            tx.incentive,
            tx.case,
            tx.message,
            plan,
        )

    def _tx(self, station_id: str, transaction_ref: str) -> Tx | None:
        tx = self._txs.get((station_id, transaction_ref))
        if tx is None:
            with self.engine.connect() as conn:
                tx = store.load_tx(conn, station_id, transaction_ref)
            if tx is not None:
                self._txs[(station_id, transaction_ref)] = tx
        return tx

    # --- meter values (the hot path: many jobs, one commit) ----------------------------------

    def samples_many(self, station_ids: Sequence[str], jobs: Sequence[SamplesIn]) -> None:
        """Apply a batch of MeterValues; one commit for all (acknowledged after it)."""
        batch = _Batch()
        try:
            for station_id, job in zip(station_ids, jobs, strict=True):
                self._samples(self.stations[station_id], job, batch)
            try:
                self._commit(batch, chains_only=True)
            except Conflict as err:  # a derived reading differs from one held: let the
                LOG.error("interval readings clash: %s", err)  # service judge each premise
                self._deliver(batch)
                self._commit(batch, chains_only=True)
        except Exception:
            for tx in batch.touched.values():  # the cache may be ahead of the database
                self._txs.pop((tx.station_id, tx.transaction_ref), None)
            raise

    def _samples(self, station: StationInfo, job: SamplesIn, batch: _Batch) -> None:
        if job.event is not None:
            self._updated(station, job.event, batch)
            return
        now = self.service.clock()
        for bad in job.bad:
            batch.quarantine.append(
                store.quarantine_row(
                    station.id,
                    "MeterValues",
                    bad.reason,
                    bad.detail,
                    job.payload,
                    now,
                    transaction_ref=job.transaction_ref,
                )
            )
        if job.transaction_ref is None:
            ref = f"evse:{job.evse_id}"
            batch.samples += [_sample_row(station.id, ref, x, False) for x in job.samples]
            return
        tx = self._tx(station.id, job.transaction_ref)
        if tx is None:
            batch.quarantine.append(
                store.quarantine_row(
                    station.id,
                    "MeterValues",
                    "unknown_transaction",
                    f"no transaction {job.transaction_ref!r} at this station",
                    job.payload,
                    now,
                    transaction_ref=job.transaction_ref,
                )
            )
            return
        self._apply(station, tx, job.samples, batch, "MeterValues", job.payload)

    def _apply(
        self,
        station: StationInfo,
        tx: Tx,
        samples: Sequence[RegisterSample],
        batch: _Batch,
        action: str,
        payload: Any,
    ) -> None:
        """Run samples through the transaction's chain; impossible stamps are quarantined."""
        now = self.service.clock()
        chain = tx.chain(station.interval_s)
        for sample in sorted(samples, key=lambda x: x.at):
            problem = self._check(station.id, sample.at)
            if problem is None and sample.at < tx.started_at:
                problem = "before_start"
            if problem is not None:
                batch.quarantine.append(
                    store.quarantine_row(
                        station.id,
                        action,
                        problem,
                        f"register {sample.register_wh} Wh stamped {sample.at.isoformat()}",
                        payload,
                        now,
                        transaction_ref=tx.transaction_ref,
                        stamped_at=sample.at,
                    )
                )
                continue
            step = Advance(False) if tx.stopped else advance(chain, sample)
            batch.samples.append(_sample_row(station.id, tx.transaction_ref, sample, step.applied))
            self._took(station, tx, step, sample.at, batch)
        tx.take(chain)
        batch.touched[tx.id] = tx

    def _took(
        self, station: StationInfo, tx: Tx, step: Advance, at: datetime, batch: _Batch
    ) -> None:
        if step.reset is not None:
            LOG.warning("%s: meter register reset in %s at %s", station.id, tx.transaction_ref, at)
            batch.resets.append(
                {
                    "station_id": station.id,
                    "transaction_ref": tx.transaction_ref,
                    "at": at,
                    "register_before_wh": step.reset[0],
                    "register_after_wh": step.reset[1],
                    "detected_at": self.service.clock(),
                }
            )
        if station.eumd_id is None or not step.intervals:
            return  # no EUMD: the station's count is an estimate, reported at the end
        batch.readings.setdefault(station.premise_id, []).extend(
            IntervalReading(
                eumd_id=station.eumd_id,
                session_id=tx.session_id,
                pev_id=tx.id_token,
                premise_id=station.premise_id,
                interval_start_at=start,
                interval_s=station.interval_s,
                energy_wh=wh,
            )
            for start, wh in step.intervals
        )

    def _deliver(self, batch: _Batch) -> None:
        """Hand the closed intervals to the utility (idempotent: a replay is a duplicate)."""
        for premise_id, readings in batch.readings.items():
            try:
                self.service.record_readings(premise_id, readings)
            except Refused as err:
                LOG.error("readings of %s refused: %s", premise_id, err)
                batch.quarantine.append(
                    store.quarantine_row(
                        "-",
                        "IntervalReadings",
                        "refused",
                        str(err),
                        [r.model_dump(mode="json") for r in readings],
                        self.service.clock(),
                    )
                )
        batch.readings = {}

    def _updated(self, station: StationInfo, event: EventIn, batch: _Batch) -> None:
        """A 2.0.1 Updated event of a running transaction, in the group commit. A retry
        needs no lookup: its samples are not after the chain, its keys are held."""
        tx = self._tx(station.id, event.transaction_ref)
        if tx is None or tx.stopped or event.has_token or event.event_type != "Updated":
            self.event(station, event)  # the general path, committed on its own
            return
        now = self.service.clock()
        for bad in event.bad:
            batch.quarantine.append(
                store.quarantine_row(
                    station.id,
                    "TransactionEvent",
                    bad.reason,
                    bad.detail,
                    event.payload,
                    now,
                    transaction_ref=tx.transaction_ref,
                )
            )
        self._apply(station, tx, event.samples, batch, "TransactionEvent", event.payload)
        key = {"station_id": station.id, "transaction_ref": tx.transaction_ref}
        batch.events.append(key | _event_row(event, now))
        if event.seq_no > tx.max_seq_no + 1:
            missing = range(tx.max_seq_no + 1, min(event.seq_no, tx.max_seq_no + 1001))
            LOG.warning("%s: seqNo gap in %s: %s", station.id, tx.transaction_ref, list(missing))
            batch.gaps += [
                key | {"seq_no": n, "detected_at": now, "filled_at": None} for n in missing
            ]
        elif event.seq_no <= tx.max_seq_no:
            batch.filled.append(key | {"seq_no": event.seq_no, "filled_at": now})
        tx.max_seq_no = max(tx.max_seq_no, event.seq_no)

    def _commit(self, batch: _Batch, *, chains_only: bool = False) -> None:
        with self.engine.begin() as conn:
            store.insert_samples(conn, batch.samples)
            store.insert_ignore(conn, s.ocpp_tx_events, batch.events)
            store.insert_ignore(conn, s.ocpp_seq_gaps, batch.gaps)
            if batch.filled:
                gaps = s.ocpp_seq_gaps
                conn.execute(
                    update(gaps)
                    .where(
                        gaps.c.station_id == bindparam("f_station"),
                        gaps.c.transaction_ref == bindparam("f_ref"),
                        gaps.c.seq_no == bindparam("f_seq"),
                        gaps.c.filled_at.is_(None),
                    )
                    .values(filled_at=bindparam("f_at")),
                    [
                        {
                            "f_station": f["station_id"],
                            "f_ref": f["transaction_ref"],
                            "f_seq": f["seq_no"],
                            "f_at": f["filled_at"],
                        }
                        for f in batch.filled
                    ],
                )
            if chains_only:  # MeterValues: only the register chain moves
                store.save_chains(conn, list(batch.touched.values()))
                # The hot path writes the interval readings in the same commit as the
                # samples that closed them (the service's record_readings is one
                # transaction per premise). They are new readings of open sessions whose
                # EUMD id, interval and alignment hold by construction; late data for a
                # closed session never comes this way (a stopped chain takes no samples).
                rows = [r.model_dump() for rs in batch.readings.values() for r in rs]
                if rows:
                    inserted = insert_new(conn, rows)
                    check_same(conn, [r for r in rows if reading_key(r) not in inserted])
            else:
                store.save_states(conn, list(batch.touched.values()))
            if batch.resets:
                conn.execute(insert(s.ocpp_register_resets), batch.resets)
            if batch.quarantine:
                conn.execute(insert(s.ocpp_quarantine), batch.quarantine)

    # --- transactions: stop --------------------------------------------------------------

    def stop(
        self, station: StationInfo, stop: StopIn, action: str = "StopTransaction"
    ) -> Reply | None:
        """End a transaction: last readings, the session report. A retry changes nothing."""
        tx = self._tx(station.id, stop.transaction_ref)
        payload = {
            "transaction_ref": stop.transaction_ref,
            "stamped": stop.stamped,
            "meter_stop_wh": stop.meter_stop_wh,
        }
        if tx is None:
            self.quarantine(
                station.id,
                action,
                "unknown_transaction",
                f"no transaction {stop.transaction_ref!r} at this station",
                payload,
                transaction_ref=stop.transaction_ref,
                stamped_at=stop.at,
            )
            return None
        if tx.stopped:
            if (tx.stop_register_wh, tx.stop_reason) != (stop.meter_stop_wh, stop.reason):
                self.quarantine(
                    station.id,
                    action,
                    "conflicting_stop",
                    "a second stop with other content; the first one stands",
                    payload,
                    transaction_ref=tx.transaction_ref,
                    stamped_at=stop.at,
                )
            return self._reply(tx)
        self._finish(station, tx, stop, action, payload)
        return self._reply(tx)

    def _finish(
        self, station: StationInfo, tx: Tx, stop: StopIn, action: str, payload: Any
    ) -> None:
        batch = _Batch()
        now = self.service.clock()
        for bad in stop.bad:
            batch.quarantine.append(
                store.quarantine_row(
                    station.id,
                    action,
                    bad.reason,
                    bad.detail,
                    payload,
                    now,
                    transaction_ref=tx.transaction_ref,
                )
            )
        self._apply(station, tx, stop.samples, batch, action, payload)
        final = None
        problem = "bad_timestamp" if stop.at is None else self._check(station.id, stop.at)
        if stop.meter_stop_wh is not None:
            if problem is not None:
                batch.quarantine.append(
                    store.quarantine_row(
                        station.id,
                        action,
                        problem,
                        f"final register {stop.meter_stop_wh} Wh stamped {stop.stamped!r}: "
                        "not billed until reviewed",
                        payload,
                        now,
                        transaction_ref=tx.transaction_ref,
                        stamped_at=stop.at,
                    )
                )
            elif stop.at is not None:
                final = RegisterSample(stop.at, stop.meter_stop_wh, "Transaction.End")
        chain = tx.chain(station.interval_s)
        step = close(chain, final)
        if final is not None:
            batch.samples.append(_sample_row(station.id, tx.transaction_ref, final, step.applied))
        tx.take(chain)
        self._took(station, tx, step, chain.last_at, batch)
        ended = stop.at if stop.at is not None and problem is None else chain.last_at
        self._bind(station, tx, stop.pev_id)
        self._deliver(batch)
        report = SessionReport(
            session_id=tx.session_id,
            premise_id=station.premise_id,
            portal_id=tx.portal_id,
            pev_id=tx.id_token if tx.bind_done else stop.pev_id,
            started_at=tx.started_at,
            ended_at=max(ended, tx.started_at),
            energy_wh=min(tx.energy_wh, 10_000_000),
            metered=station.eumd_id is not None,
        )
        try:
            self.service.report_session(station.premise_id, report)
            tx.reported = True
        except Refused as err:
            batch.quarantine.append(
                store.quarantine_row(
                    station.id,
                    action,
                    "report_refused",
                    str(err),
                    report.model_dump(mode="json"),
                    now,
                    transaction_ref=tx.transaction_ref,
                )
            )
        tx.stopped, tx.stopped_at = True, stop.at
        tx.stop_register_wh, tx.stop_reason = stop.meter_stop_wh, stop.reason
        batch.touched[tx.id] = tx
        self._commit(batch)
        self._pushed.pop((tx.premise_id, tx.session_id), None)
        # a finished transaction leaves the cache (a retried stop reads it back)
        self._txs.pop((tx.station_id, tx.transaction_ref), None)

    # --- 2.0.1 TransactionEvent ----------------------------------------------------------

    def event(self, station: StationInfo, event: EventIn) -> Reply:
        """One TransactionEvent: Started, Updated or Ended; retries by (tx, seqNo)."""
        events = s.ocpp_tx_events
        now = self.service.clock()
        with self.engine.connect() as conn:
            seen = conn.execute(
                select(events.c.seq_no).where(
                    events.c.station_id == station.id,
                    events.c.transaction_ref == event.transaction_ref,
                    events.c.seq_no == event.seq_no,
                )
            ).first()
        tx = self._tx(station.id, event.transaction_ref)
        if seen is not None and tx is not None:
            return self._reply(tx)  # a retry: acknowledged, never applied twice
        if tx is None:
            evse_id = event.evse_id if event.evse_id is not None else 0
            if event.evse_id is None:
                self.quarantine(
                    station.id,
                    "TransactionEvent",
                    "no_evse",
                    "first event of the transaction names no EVSE",
                    event.payload,
                    transaction_ref=event.transaction_ref,
                )
            start = StartIn(evse_id, event.pev_id, None, event.stamped, event.at)
            tx = self._open(
                station, "2.0.1", event.transaction_ref, evse_id, event.pev_id, start, None
            )
            self._txs[(station.id, tx.transaction_ref)] = tx
        if event.has_token and not tx.bind_done:
            self._bind(station, tx, event.pev_id)
        samples = list(event.samples)
        begin = [x for x in samples if x.context == "Transaction.Begin"]
        if tx.last_register_wh is None and begin and tx.energy_wh == 0:
            # the register at the start, when the Started event carried it
            tx.last_register_wh = tx.meter_start_wh = begin[0].register_wh
        if event.event_type == "Ended":
            ends = [x for x in samples if x.context == "Transaction.End"] or samples
            final = max(ends, key=lambda x: x.at) if ends else None
            rest = [x for x in samples if x is not final]
            stop = StopIn(
                event.transaction_ref,
                final.register_wh if final else None,
                event.stamped,
                event.at,
                event.stopped_reason,
                event.pev_id,
                rest,
                event.bad,
            )
            if not tx.stopped:
                self._finish(station, tx, stop, "TransactionEvent", event.payload)
            self._record_event(tx, event, now)
            return self._reply(tx)
        batch = _Batch()
        for bad in event.bad:
            batch.quarantine.append(
                store.quarantine_row(
                    station.id,
                    "TransactionEvent",
                    bad.reason,
                    bad.detail,
                    event.payload,
                    now,
                    transaction_ref=tx.transaction_ref,
                )
            )
        self._apply(station, tx, samples, batch, "TransactionEvent", event.payload)
        self._deliver(batch)
        self._commit(batch)
        self._record_event(tx, event, now)
        return self._reply(tx)

    def _record_event(self, tx: Tx, event: EventIn, now: datetime) -> None:
        """Last, once the event's effects are stored: from now on it is a retry."""
        with self.engine.begin() as conn:
            store.insert_ignore(
                conn,
                s.ocpp_tx_events,
                [
                    {"station_id": tx.station_id, "transaction_ref": event.transaction_ref}
                    | _event_row(event, now)
                ],
            )
            self._sequence(conn, tx, event.seq_no, now)

    def _sequence(self, conn: Any, tx: Tx, seq_no: int, now: datetime) -> None:
        """Record seqNo gaps (per transaction, from 0); a late event fills its gap."""
        gaps = s.ocpp_seq_gaps
        key = {"station_id": tx.station_id, "transaction_ref": tx.transaction_ref}
        if seq_no > tx.max_seq_no + 1:
            missing = range(tx.max_seq_no + 1, min(seq_no, tx.max_seq_no + 1001))
            if missing:
                LOG.warning(
                    "%s: seqNo gap in %s: %s..%s",
                    tx.station_id,
                    tx.transaction_ref,
                    missing[0],
                    missing[-1],
                )
                store.insert_ignore(
                    conn,
                    gaps,
                    [key | {"seq_no": n, "detected_at": now, "filled_at": None} for n in missing],
                )
        elif seq_no <= tx.max_seq_no:
            conn.execute(
                update(gaps)
                .where(*(gaps.c[k] == v for k, v in key.items()), gaps.c.seq_no == seq_no)
                .values(filled_at=now)
            )
        tx.max_seq_no = max(tx.max_seq_no, seq_no)
        store.save_states(conn, [tx])

    # --- Energy Request (2.0.1 NotifyEVChargingNeeds) ---------------------------------------

    def needs(self, station: StationInfo, evse_id: int, request_of: Any) -> Reply | None:
        """Plan the PEV's Energy Request; None when there is no bound session to plan."""
        with self.engine.connect() as conn:
            tx = store.open_tx_at(conn, station.id, evse_id)
        if tx is None or not tx.bound:
            return None
        request: EnergyRequest = request_of(tx.session_id)
        plan = self._request(station, tx, request)
        return self._reply(tx, plan)

    # --- re-plans (ALM, load-control events) -> new profiles -------------------------------

    def new_plans(self, premises: set[str]) -> list[ProfilePush]:
        """Plans recorded since the last look, for open transactions at these premises."""
        latest = self.service.latest_schedule_version()
        if self.schedule_cursor is None:
            self.schedule_cursor = latest
            return []
        if latest <= self.schedule_cursor:
            return []
        pushes: list[ProfilePush] = []
        after = self.schedule_cursor
        for premise_id in sorted(premises):
            cursor = after
            while True:
                page = self.service.schedules(premise_id, cursor)
                for update_ in page.updates:
                    push = self._push_of(premise_id, update_.session_id, update_.available)
                    if push is not None:
                        pushes.append(push)
                if not page.updates or page.cursor >= latest:
                    break
                cursor = page.cursor
        self.schedule_cursor = latest
        return pushes

    def _push_of(
        self, premise_id: str, session_id: str, available: EnergyAvailable
    ) -> ProfilePush | None:
        if self._pushed.get((premise_id, session_id)) == available:
            return None
        with self.engine.connect() as conn:
            tx = store.tx_of_session(conn, premise_id, session_id)
        if tx is None or tx.stopped:
            return None
        self._pushed[(premise_id, session_id)] = available
        return ProfilePush(
            tx.station_id, tx.protocol, tx.evse_id, tx.id, tx.transaction_ref, available
        )


def _event_row(event: EventIn, now: datetime) -> dict[str, Any]:
    return {
        "seq_no": event.seq_no,
        "event_type": event.event_type[:16],
        "trigger_reason": (event.trigger_reason or "")[:40] or None,
        "offline": event.offline,
        "stamped_at": event.at or now,
        "received_at": now,
    }


def _sample_row(station_id: str, ref: str, sample: RegisterSample, applied: bool) -> dict[str, Any]:
    return {
        "station_id": station_id,
        "transaction_ref": ref,
        "sampled_at": sample.at,
        "register_wh": sample.register_wh,
        "applied": applied,
    }
