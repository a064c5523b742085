"""The utility's OCPP desk: OCPP transactions mapped onto bind, readings and reports.

It implements the edge's port (`evroam.protocols.ocpp.port.StationDesk`) over the
utility's service and its OCPP tables (ocpp_store.py); MeterValues, the hot path, are in
ocpp_meter.py. The stations and their transactions are the utility's: the edge reaches
them only through this desk.

Crash safety without a shared transaction: the utility's calls are idempotent (same key,
same content -> the stored result), so the desk calls them first and records its own
state last. If the process dies in between, the station retries (it was not answered),
the desk recomputes the same readings and report from the state it had, and the utility
acknowledges them as duplicates.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from evroam.core.errors import Refused
from evroam.core.messages import BindRequest, EnergyAvailable, EnergyRequest, SessionReport
from evroam.protocols.ocpp.mapping import (
    Chain,
    RegisterSample,
    close,
    digest,
    session_id_for,
)
from evroam.protocols.ocpp.port import (
    EventIn,
    NeedsIn,
    ProfilePush,
    Reply,
    StartIn,
    StationDesk,
    StationInfo,
    StopIn,
)
from evroam.utility import ocpp_store as store
from evroam.utility.ocpp_meter import LOG, MeterDesk, _Batch, event_row, sample_row
from evroam.utility.ocpp_store import Tx


class TransactionDesk(MeterDesk, StationDesk):
    """The utility's `StationDesk`: one per process, called from one thread."""

    # --- transactions: start ----------------------------------------------------------------

    def start_v16(self, station_id: str, start: StartIn) -> Reply:
        """StartTransaction: a new transaction id, or the same one for a retry."""
        station = self.stations()[station_id]
        key = digest(start.evse_id, start.pev_id, start.meter_start_wh, start.stamped)
        with self.engine.connect() as conn:
            tx = store.load_tx_by_start(conn, station.id, key)
        if tx is None:
            tx = self._open(station, "1.6", None, start.evse_id, start.pev_id, start, key)
        self._txs[(station.id, tx.transaction_ref)] = tx
        self._bind(station, tx, start.pev_id)
        plan = None
        if tx.bound and start.plan_wh:
            # 1.6 carries no Energy Request: plan a default one (docs/ocpp.md)
            plan = self._request(
                station,
                tx,
                EnergyRequest(
                    session_id=tx.session_id,
                    energy_wh=start.plan_wh,
                    max_w=self._portal_w(tx.portal_id),
                    departure_at=tx.started_at + timedelta(seconds=start.dwell_s),
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
            store.name_tx(conn, tx_id, row["transaction_ref"], row["session_id"])
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

    # --- transactions: stop --------------------------------------------------------------

    def stop(self, station_id: str, stop: StopIn, action: str = "StopTransaction") -> Reply | None:
        """End a transaction: last readings, the session report. A retry changes nothing."""
        station = self.stations()[station_id]
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
        restarted = final is not None and self._restarted(station.id, tx, chain, final, batch)
        step = close(chain, final, restarted=restarted)
        if final is not None:
            if step.lower:
                batch.quarantine.append(
                    self._lower_row(station.id, tx, chain, final, action, payload)
                )
            batch.samples.append(sample_row(station.id, tx.transaction_ref, final, step.applied))
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

    def event(self, station_id: str, event: EventIn) -> Reply:
        """One TransactionEvent: Started, Updated or Ended; retries by (tx, seqNo)."""
        station = self.stations()[station_id]
        now = self.service.clock()
        with self.engine.connect() as conn:
            seen = store.event_seen(conn, station.id, event.transaction_ref, event.seq_no)
        tx = self._tx(station.id, event.transaction_ref)
        if seen and tx is not None:
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
            key = {"station_id": tx.station_id, "transaction_ref": event.transaction_ref}
            store.insert_events(conn, [key | event_row(event, now)])
            self._sequence(conn, tx, event.seq_no, now)

    def _sequence(self, conn: Any, tx: Tx, seq_no: int, now: datetime) -> None:
        """Record seqNo gaps (per transaction, from 0); a late event fills its gap."""
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
                store.insert_gaps(
                    conn,
                    [key | {"seq_no": n, "detected_at": now, "filled_at": None} for n in missing],
                )
        elif seq_no <= tx.max_seq_no:
            store.fill_gap(conn, tx.station_id, tx.transaction_ref, seq_no, now)
        tx.max_seq_no = max(tx.max_seq_no, seq_no)
        store.save_states(conn, [tx])

    # --- Energy Request (2.0.1 NotifyEVChargingNeeds) ---------------------------------------

    def needs(self, station_id: str, needs: NeedsIn) -> Reply | None:
        """Plan the PEV's Energy Request; None when there is no bound session to plan."""
        station = self.stations()[station_id]
        with self.engine.connect() as conn:
            tx = store.open_tx_at(conn, station.id, needs.evse_id)
        if tx is None or not tx.bound:
            return None
        request = EnergyRequest(
            session_id=tx.session_id,
            energy_wh=needs.energy_wh,
            max_w=needs.max_w,
            departure_at=needs.departure_at,
        )
        plan = self._request(station, tx, request)
        return self._reply(tx, plan)

    # --- re-plans (ALM, load-control events) -> new profiles -------------------------------

    def new_plans(self, premises: frozenset[str]) -> list[ProfilePush]:
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
