"""The utility's OCPP desk, its common ground: station facts, and the hot path, MeterValues.

One desk per process, used from one worker thread (the edge's ``csms.DeskWorker``), so its
caches need no locks. Every method answers: what cannot be placed is quarantined and
logged, and the station still gets its acknowledgement (the reliability rules of
docs/ocpp.md). `TransactionDesk` (ocpp_desk.py) adds starts, stops and events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from evroam.core.errors import Conflict, Refused
from evroam.core.messages import EnergyAvailable, IntervalReading
from evroam.protocols.ocpp.mapping import Advance, Chain, RegisterSample, advance, implausible
from evroam.protocols.ocpp.port import EventIn, Reply, SamplesIn, StationInfo
from evroam.utility import ocpp_store as store
from evroam.utility.ocpp_store import Tx
from evroam.utility.readings_store import check_same, insert_new, reading_key
from evroam.utility.registry import Registry
from evroam.utility.service import UtilityService
from evroam.utility.stations import station_index

LOG = logging.getLogger("evroam.ocpp")


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


class MeterDesk:
    """The desk's state and the steps every transaction message shares."""

    def __init__(self, service: UtilityService) -> None:
        self.service = service
        self.engine: Engine = service.engine
        self._index: tuple[Registry, dict[str, StationInfo]] | None = None
        self._txs: dict[tuple[str, str], Tx] = {}
        self._first_sync: dict[str, datetime | None] = {}
        self._pushed: dict[tuple[str, str], EnergyAvailable] = {}
        self.schedule_cursor: int | None = None

    def now(self) -> datetime:
        return self.service.clock()

    def stations(self) -> dict[str, StationInfo]:
        """The registered stations (rebuilt when the service reloads its registry)."""
        registry = self.service.registry()
        if self._index is None or self._index[0] is not registry:
            self._index = (registry, station_index(registry))
        return self._index[1]

    def event(self, station_id: str, event: EventIn) -> Reply:
        raise NotImplementedError  # TransactionDesk's

    # --- station facts ------------------------------------------------------------------

    def boot(self, station_id: str, protocol: str, facts: Mapping[str, str | None]) -> datetime:
        """Record a BootNotification; the answer's currentTime syncs the station's clock."""
        now = self.service.clock()
        with self.engine.begin() as conn:
            self._first_sync[station_id] = store.record_boot(
                conn, station_id, protocol, dict(facts), now
            )
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

    def enrolled(self, pev_id: str | None) -> bool:
        pev = self.service.registry().pevs.get(pev_id or "")
        return pev is not None and pev.program is not None

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
        row = store.quarantine_row(
            station_id,
            action,
            reason,
            detail,
            payload,
            self.service.clock(),
            transaction_ref=transaction_ref,
            stamped_at=stamped_at,
        )
        with self.engine.begin() as conn:
            store.insert_quarantine(conn, [row])
        self._quarantined([row])

    def _quarantined(self, rows: Sequence[dict[str, Any]]) -> None:
        """Log and count what went to quarantine: the ids and the reason; the detail and
        the payload stay in the table for review, out of the logs."""
        for row in rows:
            LOG.warning(
                "%s %s quarantined: %s",
                row["station_id"],
                row["action"],
                row["reason"],
                extra={
                    "station_id": row["station_id"],
                    "transaction_ref": row["transaction_ref"],
                    "quarantine_reason": row["reason"],
                },
            )
            self.service.ctx.metrics.quarantined.labels(row["action"], row["reason"]).inc()

    def _sync_of(self, station_id: str) -> datetime | None:
        if station_id not in self._first_sync:
            with self.engine.connect() as conn:
                self._first_sync[station_id] = store.first_sync(conn, station_id)
        return self._first_sync[station_id]

    def _check(self, station_id: str, at: datetime) -> str | None:
        return implausible(at, self.service.clock(), self._sync_of(station_id))

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

    def samples_many(
        self, station_ids: Sequence[str], jobs: Sequence[SamplesIn]
    ) -> list[str | None]:
        """Apply a batch of MeterValues in one commit (each acknowledged after it).

        One message the database refuses must not fail its group (other stations' messages
        among them): a failed group is split in halves and each half stored again, down to
        the message that fails alone, which is set aside in ocpp_quarantine
        (``store_failed``) and acknowledged. A message stored before the failure is a retry
        the second time (the chain applies only later samples), so nothing counts twice.
        Per job: None (stored or set aside), or why it is not stored (the database is out
        of reach: the station must send it again).
        """
        pairs = list(zip(station_ids, jobs, strict=True))
        outcomes: list[str | None] = [None] * len(pairs)
        self._store(pairs, 0, len(pairs), outcomes)
        return outcomes

    def _store(
        self,
        pairs: list[tuple[str, SamplesIn]],
        lo: int,
        hi: int,
        outcomes: list[str | None],
    ) -> None:
        try:
            self._group(pairs[lo:hi])
        except Exception as err:
            self._txs.clear()  # the cache may be ahead of the database
            if _unreachable(err):  # nothing to isolate: every message is sent again
                LOG.error("MeterValues not stored (%s messages): %s", hi - lo, _cause(err))
                outcomes[lo:hi] = [f"not stored: {_cause(err)}"[:200]] * (hi - lo)
                return
            if hi - lo == 1:
                outcomes[lo] = self._set_aside(*pairs[lo], err)
                return
            LOG.warning(
                "MeterValues group of %s failed (%s): stored again in halves",
                hi - lo,
                _cause(err),
            )
            middle = (lo + hi) // 2
            self._store(pairs, lo, middle, outcomes)
            self._store(pairs, middle, hi, outcomes)

    def _group(self, pairs: Sequence[tuple[str, SamplesIn]]) -> None:
        """The messages in one commit, but for an event that needs the general path: what
        came before it is committed first (the event reads and commits its transaction's
        state on its own, which must not include samples still uncommitted)."""
        stations = self.stations()
        batch = _Batch()
        for station_id, job in pairs:
            station = stations[station_id]
            if job.event is not None and self._own_commit(station, job.event):
                self._commit_group(batch)
                batch = _Batch()
                self.event(station.id, job.event)
                continue
            self._samples(station, job, batch)
        self._commit_group(batch)

    def _commit_group(self, batch: _Batch) -> None:
        try:
            self._commit(batch, chains_only=True)
        except Conflict as err:  # a derived reading differs from one held: let the
            LOG.error("interval readings clash: %s", err)  # service judge each premise
            self._deliver(batch)
            self._commit(batch, chains_only=True)

    def _set_aside(self, station_id: str, job: SamplesIn, err: Exception) -> str | None:
        """A message that fails alone: quarantined for review and acknowledged (sent again
        it would fail again and hold its station's queue). None once it is held."""
        event = job.event
        LOG.error("%s: a message that cannot be stored is set aside: %s", station_id, _cause(err))
        try:
            self.quarantine(
                station_id,
                "MeterValues" if event is None else "TransactionEvent",
                "store_failed",
                _cause(err),
                job.payload if event is None else event.payload,
                transaction_ref=job.transaction_ref if event is None else event.transaction_ref,
            )
        except Exception as again:
            LOG.exception("%s: the message could not be set aside either", station_id)
            return f"not stored: {_cause(again)}"[:200]
        return None

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
            batch.samples += [sample_row(station.id, ref, x, False) for x in job.samples]
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
            if tx.stopped:
                step = Advance(False)
            else:
                restarted = self._restarted(station.id, tx, chain, sample, batch)
                step = advance(chain, sample, restarted=restarted)
            if step.lower:
                batch.quarantine.append(
                    self._lower_row(station.id, tx, chain, sample, action, payload)
                )
            batch.samples.append(sample_row(station.id, tx.transaction_ref, sample, step.applied))
            self._took(station, tx, step, sample.at, batch)
        tx.take(chain)
        batch.touched[tx.id] = tx

    def _restarted(
        self, station_id: str, tx: Tx, chain: Chain, sample: RegisterSample, batch: _Batch
    ) -> bool:
        """Whether a lower register may be a reset: the station restarted (its last
        BootNotification came after the last sample applied), and that restart has not
        already reset this transaction's register. Looked up only for a lower sample."""
        if (
            chain.last_register_wh is None
            or sample.register_wh >= chain.last_register_wh
            or sample.at <= chain.last_at
        ):
            return False
        with self.engine.connect() as conn:
            booted = store.last_boot(conn, station_id)
            if booted is None or booted <= chain.last_at:
                return False
            if store.reset_since(conn, station_id, tx.transaction_ref, booted):
                return False
        return not any(
            r["station_id"] == station_id
            and r["transaction_ref"] == tx.transaction_ref
            and r["detected_at"] >= booted
            for r in batch.resets
        )

    def _lower_row(
        self,
        station_id: str,
        tx: Tx,
        chain: Chain,
        sample: RegisterSample,
        action: str,
        payload: Any,
    ) -> dict[str, Any]:
        """A lower register with no restart: set aside for review, never billed."""
        LOG.warning(
            "%s: register %s Wh in %s below %s Wh without a restart: quarantined",
            station_id,
            sample.register_wh,
            tx.transaction_ref,
            chain.last_register_wh,
        )
        return store.quarantine_row(
            station_id,
            action,
            "register_lower",
            f"register {sample.register_wh} Wh stamped {sample.at.isoformat()} is below "
            f"{chain.last_register_wh} Wh stamped {chain.last_at.isoformat()} and the station "
            "did not restart in between: not billed until reviewed",
            payload,
            self.service.clock(),
            transaction_ref=tx.transaction_ref,
            stamped_at=sample.at,
        )

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
                LOG.error(
                    "readings of %s refused: %s",
                    premise_id,
                    err.field,
                    extra={"premise_id": premise_id, "reason": err.message},
                )
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

    def _own_commit(self, station: StationInfo, event: EventIn) -> bool:
        """Whether an event in a group takes the general path, committed on its own."""
        tx = self._tx(station.id, event.transaction_ref)
        return tx is None or tx.stopped or event.has_token or event.event_type != "Updated"

    def _updated(self, station: StationInfo, event: EventIn, batch: _Batch) -> None:
        """A 2.0.1 Updated event of a running transaction, in the group commit. A retry
        needs no lookup: its samples are not after the chain, its keys are held."""
        tx = self._tx(station.id, event.transaction_ref)
        if tx is None:  # pragma: no cover - _own_commit sends such an event the general way
            raise RuntimeError(f"no transaction {event.transaction_ref!r} for a grouped event")
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
        batch.events.append(key | event_row(event, now))
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
        accepted = duplicates = 0
        with self.engine.begin() as conn:
            store.insert_samples(conn, batch.samples)
            store.insert_events(conn, batch.events)
            store.insert_gaps(conn, batch.gaps)
            store.fill_gaps(conn, batch.filled)
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
                    accepted, duplicates = len(inserted), len(rows) - len(inserted)
            else:
                store.save_states(conn, list(batch.touched.values()))
            store.insert_resets(conn, batch.resets)
            store.insert_quarantine(conn, batch.quarantine)
        self.service.ctx.metrics.readings_in(accepted, duplicates)
        self._quarantined(batch.quarantine)


def event_row(event: EventIn, now: datetime) -> dict[str, Any]:
    return {
        "seq_no": event.seq_no,
        "event_type": event.event_type[:16],
        "trigger_reason": (event.trigger_reason or "")[:40] or None,
        "offline": event.offline,
        "stamped_at": event.at or now,
        "received_at": now,
    }


def sample_row(station_id: str, ref: str, sample: RegisterSample, applied: bool) -> dict[str, Any]:
    return {
        "station_id": station_id,
        "transaction_ref": ref,
        "sampled_at": sample.at,
        "register_wh": sample.register_wh,
        "applied": applied,
    }


def _cause(err: BaseException) -> str:
    """The driver's own words when there are some (not SQLAlchemy's statement dump)."""
    cause = getattr(err, "orig", None) or err
    return f"{type(cause).__name__}: {cause}"[:300]


def _unreachable(err: BaseException) -> bool:
    """A failure of the database itself (gone, locked, timed out), not of one message."""
    return isinstance(err, OperationalError | InterfaceError) or bool(
        getattr(err, "connection_invalidated", False)
    )
