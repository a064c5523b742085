"""The utility's OCPP tables: transactions, register samples, station events, quarantine."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Dialect, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from evroam.db import schema as s
from evroam.db.types import UtcDateTime
from evroam.protocols.ocpp.mapping import Chain

T = s.ocpp_transactions


@dataclass
class Tx:
    """One OCPP transaction and where its meter chain stands (a row of ocpp_transactions)."""

    id: int
    station_id: str
    transaction_ref: str
    protocol: str
    premise_id: str
    session_id: str
    evse_id: int
    portal_id: str
    id_token: str | None
    start_key: str | None
    started_at: datetime
    meter_start_wh: int | None
    bind_done: bool
    bound: bool
    incentive: bool
    case: str | None
    message: str | None
    last_at: datetime
    last_register_wh: int | None
    energy_wh: int
    boundary_at: datetime
    boundary_wh: int
    stopped: bool
    stopped_at: datetime | None
    stop_register_wh: int | None
    stop_reason: str | None
    reported: bool
    max_seq_no: int
    received_at: datetime

    def chain(self, interval_s: int) -> Chain:
        return Chain(
            interval_s,
            self.last_at,
            self.last_register_wh,
            self.energy_wh,
            self.boundary_at,
            self.boundary_wh,
        )

    def take(self, chain: Chain) -> None:
        self.last_at, self.last_register_wh, self.energy_wh = (
            chain.last_at,
            chain.last_register_wh,
            chain.energy_wh,
        )
        self.boundary_at, self.boundary_wh = chain.boundary_at, chain.boundary_wh

    def row(self) -> dict[str, Any]:
        return asdict(self)


_STATE = (
    "id_token",
    "bind_done",
    "bound",
    "incentive",
    "case",
    "message",
    "last_at",
    "last_register_wh",
    "energy_wh",
    "boundary_at",
    "boundary_wh",
    "stopped",
    "stopped_at",
    "stop_register_wh",
    "stop_reason",
    "reported",
    "max_seq_no",
)


def load_tx(conn: Connection, station_id: str, transaction_ref: str) -> Tx | None:
    row = (
        conn.execute(
            select(T).where(T.c.station_id == station_id, T.c.transaction_ref == transaction_ref)
        )
        .mappings()
        .first()
    )
    return Tx(**row) if row is not None else None


def load_tx_by_start(conn: Connection, station_id: str, start_key: str) -> Tx | None:
    row = (
        conn.execute(select(T).where(T.c.station_id == station_id, T.c.start_key == start_key))
        .mappings()
        .first()
    )
    return Tx(**row) if row is not None else None


def open_tx_at(conn: Connection, station_id: str, evse_id: int) -> Tx | None:
    """The newest transaction still running on the station's EVSE."""
    row = (
        conn.execute(
            select(T)
            .where(T.c.station_id == station_id, T.c.evse_id == evse_id, T.c.stopped.is_(False))
            .order_by(T.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return Tx(**row) if row is not None else None


def tx_of_session(conn: Connection, premise_id: str, session_id: str) -> Tx | None:
    row = (
        conn.execute(select(T).where(T.c.premise_id == premise_id, T.c.session_id == session_id))
        .mappings()
        .first()
    )
    return Tx(**row) if row is not None else None


def insert_tx(conn: Connection, row: dict[str, Any]) -> int:
    row = {k: v for k, v in row.items() if k != "id"}
    return int(conn.execute(insert(T).values(row).returning(T.c.id)).scalar_one())


def save_states(conn: Connection, txs: Sequence[Tx]) -> None:
    if not txs:
        return
    conn.execute(
        update(T).where(T.c.id == bindparam("tx_id")).values({k: bindparam(k) for k in _STATE}),
        [{"tx_id": tx.id, **{k: getattr(tx, k) for k in _STATE}} for tx in txs],
    )


_CHAIN = ("last_at", "last_register_wh", "energy_wh", "boundary_at", "boundary_wh", "max_seq_no")
_SAMPLE = ("station_id", "transaction_ref", "sampled_at", "register_wh", "applied")


def _bound(
    conn: Connection, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """Rows as the driver takes them, through each column type's bind processor (so an
    instant is stored exactly as SQLAlchemy stores it everywhere else; ``instant_binder``
    is the same conversion for UTC instants, without strftime)."""
    processors = [
        instant_binder(conn.dialect)
        if isinstance(table.c[n].type, UtcDateTime)
        else table.c[n].type.bind_processor(conn.dialect)
        for n in names
    ]
    converted = [(k, p) for k, p in enumerate(processors) if p is not None]
    out: list[tuple[Any, ...]] = []
    for row in rows:
        if len(row) != len(names):
            raise ValueError(f"{len(row)} values for {len(names)} columns")
        values = list(row)
        for k, process in converted:
            values[k] = process(values[k])
        out.append(tuple(values))
    return out


def instant_binder(dialect: Dialect) -> Callable[[datetime | None], Any]:
    """What ``UtcDateTime.process_bind_param`` makes of an instant, for the hot path: a
    batch repeats its instants (a chain's last sample is the sample just stored, interval
    boundaries are clock-aligned), so on SQLite each text is made once and remembered."""
    column_type = UtcDateTime()

    def process(value: datetime | None) -> Any:
        return column_type.process_bind_param(value, dialect)

    if dialect.name != "sqlite":
        return process
    texts = _SQLITE_TEXTS

    def sqlite_text(value: datetime | None) -> Any:
        text = texts.get(value)
        if text is None:
            if value is None or value.tzinfo is not UTC or value.year < 1000:
                return process(value)  # naive (refused), other zones, the far past
            if len(texts) >= 8192:
                texts.clear()
            text = texts[value] = value.isoformat(timespec="microseconds")[:26] + "Z"
        return text

    return sqlite_text


_SQLITE_TEXTS: dict[datetime | None, str] = {}


_PG_TYPES = {
    "last_at": "timestamptz",
    "boundary_at": "timestamptz",
    "sampled_at": "timestamptz",
    "last_register_wh": "int8",  # Wh columns are BIGINT (WattHours)
    "energy_wh": "int8",
    "boundary_wh": "int8",
    "max_seq_no": "int4",
    "register_wh": "int8",
    "id": "int4",
    "station_id": "text",
    "transaction_ref": "text",
    "applied": "bool",
}


def _pg_arrays(
    names: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> tuple[str, tuple[Any, ...]]:
    """unnest(...) of one array per column: one statement for a whole batch on PostgreSQL
    (psycopg's executemany costs ~100 us a row here)."""
    arrays = ", ".join(f"%s::{_PG_TYPES[n]}[]" for n in names)
    return f"unnest({arrays})", tuple(list(c) for c in zip(*rows, strict=True))


def save_chains(conn: Connection, txs: Sequence[Tx]) -> None:
    """The hot path's update: only the register chain, straight to the driver (SQLAlchemy's
    per-row parameter processing cost more than the database did)."""
    if not txs:
        return
    names = (*_CHAIN, "id")
    rows = _bound(conn, T, names, [[*(getattr(tx, k) for k in _CHAIN), tx.id] for tx in txs])
    if conn.dialect.name == "postgresql":
        source, params = _pg_arrays(names, rows)
        sets = ", ".join(f"{k} = v.{k}" for k in _CHAIN)
        conn.exec_driver_sql(
            f"UPDATE {T.name} AS t SET {sets} FROM {source} AS v({', '.join(names)})"
            " WHERE t.id = v.id",
            params,
        )
        return
    sets = ", ".join(f"{k} = ?" for k in _CHAIN)
    conn.exec_driver_sql(f"UPDATE {T.name} SET {sets} WHERE id = ?", rows)


def insert_samples(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Register samples; a retried message repeats its keys and is not stored twice."""
    if not rows:
        return
    table = s.ocpp_meter_samples
    bound = _bound(conn, table, _SAMPLE, [[r[k] for k in _SAMPLE] for r in rows])
    columns = ", ".join(_SAMPLE)
    if conn.dialect.name == "postgresql":
        source, params = _pg_arrays(_SAMPLE, bound)
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({columns}) SELECT * FROM {source} ON CONFLICT DO NOTHING",
            params,
        )
        return
    marks = ", ".join("?" for _ in _SAMPLE)
    sql = f"INSERT INTO {table.name} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    conn.exec_driver_sql(sql, bound)


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the rows whose key is new (a retried message repeats its keys)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(table).on_conflict_do_nothing(), list(rows))
    else:
        conn.execute(sqlite.insert(table).on_conflict_do_nothing(), list(rows))


def quarantine_row(
    station_id: str,
    action: str,
    reason: str,
    detail: str,
    payload: Any,
    received_at: datetime,
    *,
    transaction_ref: str | None = None,
    stamped_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "station_id": station_id,
        "transaction_ref": transaction_ref,
        "action": action[:40],
        "reason": reason[:40],
        "detail": detail[:300],
        "stamped_at": stamped_at,
        "payload": json.dumps(payload, default=str, sort_keys=True),
        "received_at": received_at,
        "reviewed": False,
    }


def first_sync(conn: Connection, station_id: str) -> datetime | None:
    table = s.ocpp_station_state
    value = conn.execute(
        select(table.c.first_sync_at).where(table.c.station_id == station_id)
    ).scalar()
    return value if isinstance(value, datetime) else None


def last_boot(conn: Connection, station_id: str) -> datetime | None:
    """When the station's last BootNotification was answered (the utility's clock)."""
    table = s.ocpp_station_state
    value = conn.execute(
        select(table.c.last_boot_at).where(table.c.station_id == station_id)
    ).scalar()
    return value if isinstance(value, datetime) else None


def reset_since(conn: Connection, station_id: str, transaction_ref: str, since: datetime) -> bool:
    """Whether the transaction's register was taken as reset at or after `since`."""
    table = s.ocpp_register_resets
    found = conn.execute(
        select(table.c.id)
        .where(
            table.c.station_id == station_id,
            table.c.transaction_ref == transaction_ref,
            table.c.detected_at >= since,
        )
        .limit(1)
    ).first()
    return found is not None


def record_boot(
    conn: Connection, station_id: str, protocol: str, facts: dict[str, str | None], now: datetime
) -> datetime:
    """Record a boot (the time sync); returns the station's first sync instant."""
    table = s.ocpp_station_state
    held = conn.execute(select(table).where(table.c.station_id == station_id)).mappings().first()
    facts = {k: (v[:50] if v else None) for k, v in facts.items()}
    if held is None:
        conn.execute(
            insert(table).values(
                station_id=station_id,
                protocol=protocol,
                first_sync_at=now,
                last_boot_at=now,
                boots=1,
                **facts,
            )
        )
        return now
    conn.execute(
        update(table)
        .where(table.c.station_id == station_id)
        .values(protocol=protocol, last_boot_at=now, boots=held["boots"] + 1, **facts)
    )
    first: datetime = held["first_sync_at"]
    return first


def record_status(conn: Connection, row: dict[str, Any]) -> None:
    table = s.ocpp_connector_status
    key = {k: row[k] for k in ("station_id", "evse_id", "connector_id")}
    done = conn.execute(
        update(table)
        .where(*(table.c[k] == v for k, v in key.items()))
        .values({k: v for k, v in row.items() if k not in key})
    )
    if done.rowcount == 0:
        conn.execute(insert(table).values(row))


def name_tx(conn: Connection, tx_id: int, transaction_ref: str, session_id: str) -> None:
    """A new transaction's name and session (1.6: the CSMS names it after its row id)."""
    conn.execute(
        update(T)
        .where(T.c.id == tx_id)
        .values(transaction_ref=transaction_ref, session_id=session_id)
    )


def event_seen(conn: Connection, station_id: str, transaction_ref: str, seq_no: int) -> bool:
    events = s.ocpp_tx_events
    found = conn.execute(
        select(events.c.seq_no).where(
            events.c.station_id == station_id,
            events.c.transaction_ref == transaction_ref,
            events.c.seq_no == seq_no,
        )
    ).first()
    return found is not None


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    insert_ignore(conn, s.ocpp_tx_events, rows)


def insert_gaps(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    insert_ignore(conn, s.ocpp_seq_gaps, rows)


def fill_gap(
    conn: Connection, station_id: str, transaction_ref: str, seq_no: int, at: datetime
) -> None:
    gaps = s.ocpp_seq_gaps
    conn.execute(
        update(gaps)
        .where(
            gaps.c.station_id == station_id,
            gaps.c.transaction_ref == transaction_ref,
            gaps.c.seq_no == seq_no,
        )
        .values(filled_at=at)
    )


def fill_gaps(conn: Connection, filled: Sequence[dict[str, Any]]) -> None:
    """Mark late events' gaps filled (a gap filled before keeps its first instant)."""
    if not filled:
        return
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
            for f in filled
        ],
    )


def insert_resets(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(s.ocpp_register_resets), list(rows))


def insert_quarantine(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(s.ocpp_quarantine), list(rows))
