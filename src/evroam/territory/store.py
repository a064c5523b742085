"""The territory in the database: load a file as one idempotent sync, and read it back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection, Table, and_, delete, insert, select, update

from evroam.core.tariffs import Tariff
from evroam.db import schema as s
from evroam.territory.model import Territory, Utility

_TARIFF = TypeAdapter[Tariff](Tariff)

# Parents before children: inserts go in this order, deletes in reverse.
_ORDER: tuple[Table, ...] = (
    s.tariffs,
    s.programs,
    s.feeders,
    s.customers,
    s.accounts,
    s.premises,
    s.portals,
    s.pevs,
    s.stations,
    s.station_evses,
)


@dataclass
class SyncReport:
    """How many rows a load added, changed and removed, per table."""

    added: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(self.added.values()) or any(self.updated.values()) or any(self.removed.values())

    def count(self, bucket: dict[str, int], table: str, n: int) -> None:
        if n:
            bucket[table] = bucket.get(table, 0) + n


def save_territory(conn: Connection, territory: Territory) -> SyncReport:
    """Make the database hold exactly what the file says for the utilities it names.

    Runs inside the caller's transaction: a failure leaves the database as it was.
    Utilities the file does not name are left untouched.
    """
    report = SyncReport()
    for position, utility in enumerate(territory.utilities):
        _sync(conn, s.utilities, ["id"], _utility_row(utility, position), report)
    for utility in territory.utilities:
        rows = _utility_children(utility)
        for table in reversed(_ORDER):
            _remove_missing(conn, table, utility.id, rows[table.name], report)
        for table in _ORDER:
            for row in rows[table.name]:
                _sync(conn, table, _key(table), row, report)
    if territory.clearinghouse is not None:
        ch = territory.clearinghouse
        _sync(conn, s.clearinghouses, ["id"], {"id": ch.id, "name": ch.name}, report)
        members = [
            {"clearinghouse_id": ch.id, "utility_id": m, "position": k}
            for k, m in enumerate(ch.members)
        ]
        current = conn.execute(
            select(s.clearinghouse_members.c.utility_id).where(
                s.clearinghouse_members.c.clearinghouse_id == ch.id
            )
        ).scalars()
        gone = set(current) - set(ch.members)
        if gone:
            conn.execute(
                delete(s.clearinghouse_members).where(
                    s.clearinghouse_members.c.clearinghouse_id == ch.id,
                    s.clearinghouse_members.c.utility_id.in_(gone),
                )
            )
            report.count(report.removed, "clearinghouse_members", len(gone))
        for row in members:
            _sync(conn, s.clearinghouse_members, ["clearinghouse_id", "utility_id"], row, report)
    return report


def _key(table: Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


def _sync(
    conn: Connection, table: Table, key: Sequence[str], row: dict[str, Any], report: SyncReport
) -> None:
    where = and_(*(table.c[k] == row[k] for k in key))
    existing = conn.execute(select(table).where(where)).mappings().first()
    if existing is None:
        conn.execute(insert(table).values(row))
        report.count(report.added, table.name, 1)
    elif any(_differs(existing[k], v) for k, v in row.items()):
        conn.execute(update(table).where(where).values(row))
        report.count(report.updated, table.name, 1)


def _differs(stored: Any, wanted: Any) -> bool:
    # Decimal("60") == Decimal("60.0"), but the file's scale is part of what it says
    if isinstance(wanted, Decimal) and isinstance(stored, Decimal):
        return str(stored) != str(wanted)
    return bool(stored != wanted)


def _remove_missing(
    conn: Connection, table: Table, utility_id: str, rows: list[dict[str, Any]], report: SyncReport
) -> None:
    key = _key(table)
    wanted = {tuple(r[k] for k in key) for r in rows}
    scope = _scope(table, utility_id)
    existing = conn.execute(select(*(table.c[k] for k in key)).where(scope)).all()
    for found in existing:
        if tuple(found) not in wanted:
            conn.execute(
                delete(table).where(
                    and_(*(table.c[k] == v for k, v in zip(key, found, strict=True)))
                )
            )
            report.count(report.removed, table.name, 1)


def _scope(table: Table, utility_id: str) -> Any:
    if "utility_id" in table.c:
        return table.c.utility_id == utility_id
    if "station_id" in table.c:  # a station's EVSEs hang on the station
        return table.c.station_id.in_(
            select(s.stations.c.id).where(
                s.stations.c.premise_id.in_(
                    select(s.premises.c.id).where(s.premises.c.utility_id == utility_id)
                )
            )
        )
    # portals hang on premises, which carry the utility
    return table.c.premise_id.in_(
        select(s.premises.c.id).where(s.premises.c.utility_id == utility_id)
    )


def _utility_row(u: Utility, position: int) -> dict[str, Any]:
    return {
        "id": u.id,
        "position": position,
        "name": u.name,
        "time_zone": u.time_zone,
        "currency": u.currency,
        "holiday_country": u.holidays.country if u.holidays else None,
        "holiday_subdivision": u.holidays.subdivision if u.holidays else None,
        "billing_cycle_day": u.billing_cycle_day,
        "default_tariff": u.default_tariff,
        "guest_tariff": u.guest_tariff,
    }


def _utility_children(u: Utility) -> dict[str, list[dict[str, Any]]]:
    owner = u.accounts()
    return {
        "tariffs": [
            {
                "utility_id": u.id,
                "id": t.id,
                "position": k,
                # no sort_keys: TOU periods must read back in the file's order
                "spec": json.dumps(_TARIFF.dump_python(t, mode="json")),
            }
            for k, t in enumerate(u.tariffs)
        ],
        "programs": [
            {
                "utility_id": u.id,
                "id": p.id,
                "position": k,
                "name": p.name,
                "kind": p.kind,
                "tariff_id": p.tariff,
                "monthly_charge": p.monthly_charge,
                "dlc_credit_per_event": p.dlc_credit_per_event,
                "dlc_credit_per_kwh": p.dlc_credit_per_kwh,
            }
            for k, p in enumerate(u.programs)
        ],
        "feeders": [
            {"utility_id": u.id, "id": f.id, "position": k, "capacity_kw": f.capacity_kw}
            for k, f in enumerate(u.feeders)
        ],
        "customers": [
            {"utility_id": u.id, "id": c.id, "position": k, "name": c.name}
            for k, c in enumerate(u.customers)
        ],
        "accounts": [
            {"id": a, "utility_id": u.id, "customer_id": c.id, "position": k}
            for k, (a, c) in enumerate(owner.items())
        ],
        "premises": [
            {
                "id": p.id,
                "utility_id": u.id,
                "account_id": p.account,
                "position": k,
                "kind": p.kind,
                "feeder_id": p.feeder,
                "esi_communicating": p.esi.communicating,
                "eumd_id": p.eumd.id if p.eumd else None,
                "eumd_interval_s": p.eumd.interval_s if p.eumd else None,
                "visitor_policy": p.visitors.policy,
                "permitted_pevs": None
                if p.visitors.permitted_pevs is None
                else json.dumps(list(p.visitors.permitted_pevs)),
            }
            for k, p in enumerate(u.premises)
        ],
        "portals": [
            {
                "id": ep.id,
                "premise_id": p.id,
                "position": k,
                "type": ep.type,
                "amps": ep.amps,
                "max_kw": ep.max_kw,
            }
            for p in u.premises
            for k, ep in enumerate(p.portals)
        ],
        "pevs": [
            {
                "id": v.id,
                "utility_id": u.id,
                "owner_account": v.owner_account,
                "position": k,
                "program_id": v.program,
                "home_premise_id": v.home_premise,
                "communicating": v.communicating,
                "max_kw": v.max_kw,
            }
            for k, v in enumerate(u.pevs)
        ],
        "stations": [
            {
                "id": st.id,
                "premise_id": p.id,
                "position": k,
                "password_sha256": st.password_sha256,
            }
            for p in u.premises
            for k, st in enumerate(p.stations)
        ],
        "station_evses": [
            {"station_id": st.id, "evse_id": e.id, "portal_id": e.portal, "position": k}
            for p in u.premises
            for st in p.stations
            for k, e in enumerate(st.evses)
        ],
    }


def read_territory(conn: Connection) -> Territory | None:
    """The whole registry as a Territory, in file order; None when nothing is loaded."""
    utilities = conn.execute(select(s.utilities).order_by(s.utilities.c.position)).mappings()
    docs = [_utility_doc(conn, dict(u)) for u in utilities]
    if not docs:
        return None
    document: dict[str, Any] = {"utilities": docs}
    ch = conn.execute(select(s.clearinghouses).order_by(s.clearinghouses.c.id)).mappings().first()
    if ch is not None:
        members = conn.execute(
            select(s.clearinghouse_members.c.utility_id)
            .where(s.clearinghouse_members.c.clearinghouse_id == ch["id"])
            .order_by(s.clearinghouse_members.c.position)
        ).scalars()
        document["clearinghouse"] = {"id": ch["id"], "name": ch["name"], "members": list(members)}
    return Territory.model_validate(document)


def _rows(conn: Connection, table: Table, utility_id: str) -> list[dict[str, Any]]:
    query = select(table).where(_scope(table, utility_id)).order_by(table.c.position)
    return [dict(r) for r in conn.execute(query).mappings()]


def _utility_doc(conn: Connection, u: dict[str, Any]) -> dict[str, Any]:
    uid = u["id"]
    portals: dict[str, list[dict[str, Any]]] = {}
    for ep in _rows(conn, s.portals, uid):
        portals.setdefault(ep["premise_id"], []).append(
            {"id": ep["id"], "type": ep["type"], "amps": ep["amps"], "max_kw": ep["max_kw"]}
        )
    evses: dict[str, list[dict[str, Any]]] = {}
    for e in _rows(conn, s.station_evses, uid):
        evses.setdefault(e["station_id"], []).append({"id": e["evse_id"], "portal": e["portal_id"]})
    stations: dict[str, list[dict[str, Any]]] = {}
    for st in _rows(conn, s.stations, uid):
        stations.setdefault(st["premise_id"], []).append(
            {
                "id": st["id"],
                "password_sha256": st["password_sha256"],
                "evses": evses.get(st["id"], []),
            }
        )
    accounts: dict[str, list[dict[str, Any]]] = {}
    for a in _rows(conn, s.accounts, uid):
        accounts.setdefault(a["customer_id"], []).append({"id": a["id"]})
    return {
        "id": uid,
        "name": u["name"],
        "time_zone": u["time_zone"],
        "currency": u["currency"],
        "holidays": None
        if u["holiday_country"] is None
        else {"country": u["holiday_country"], "subdivision": u["holiday_subdivision"]},
        "billing_cycle_day": u["billing_cycle_day"],
        "default_tariff": u["default_tariff"],
        "guest_tariff": u["guest_tariff"],
        "tariffs": [json.loads(t["spec"]) for t in _rows(conn, s.tariffs, uid)],
        "programs": [
            {k: p[k] for k in ("id", "name", "kind", "monthly_charge")}
            | {
                "tariff": p["tariff_id"],
                "dlc_credit_per_event": p["dlc_credit_per_event"],
                "dlc_credit_per_kwh": p["dlc_credit_per_kwh"],
            }
            for p in _rows(conn, s.programs, uid)
        ],
        "feeders": [
            {"id": f["id"], "capacity_kw": f["capacity_kw"]} for f in _rows(conn, s.feeders, uid)
        ],
        "customers": [
            {"id": c["id"], "name": c["name"], "accounts": accounts.get(c["id"], [])}
            for c in _rows(conn, s.customers, uid)
        ],
        "premises": [
            {
                "id": p["id"],
                "account": p["account_id"],
                "kind": p["kind"],
                "feeder": p["feeder_id"],
                "esi": {"communicating": p["esi_communicating"]},
                "eumd": None
                if p["eumd_id"] is None
                else {"id": p["eumd_id"], "interval_s": p["eumd_interval_s"]},
                "visitors": {
                    "policy": p["visitor_policy"],
                    "permitted_pevs": None
                    if p["permitted_pevs"] is None
                    else json.loads(p["permitted_pevs"]),
                },
                "portals": portals.get(p["id"], []),
                "stations": stations.get(p["id"], []),
            }
            for p in _rows(conn, s.premises, uid)
        ],
        "pevs": [
            {
                "id": v["id"],
                "owner_account": v["owner_account"],
                "program": v["program_id"],
                "home_premise": v["home_premise_id"],
                "communicating": v["communicating"],
                "max_kw": v["max_kw"],
            }
            for v in _rows(conn, s.pevs, uid)
        ],
    }
