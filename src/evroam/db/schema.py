"""Tables. Every party uses the same schema; a process only fills the tables it owns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from evroam.db.types import ExactDecimal, UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _id(name: str = "id", *args: Any, **kw: Any) -> Column[str]:
    return Column(name, String(64), *args, **kw)


# --- the territory registry (the utility's CIS and the clearinghouse membership) ---------
# `position` keeps each list in file order, so `territory show` prints the file back.

utilities = Table(
    "utilities",
    metadata,
    _id(primary_key=True),
    Column("position", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("holiday_country", String(3)),
    Column("holiday_subdivision", String(16)),
    Column("billing_cycle_day", Integer, nullable=False),
    _id("default_tariff", nullable=False),
    _id("guest_tariff", nullable=False),
)

tariffs = Table(
    "tariffs",
    metadata,
    _id("utility_id", ForeignKey("utilities.id"), primary_key=True),
    _id(primary_key=True),
    Column("position", Integer, nullable=False),
    Column("spec", Text, nullable=False),  # the tariff as JSON, exactly as validated
)

programs = Table(
    "programs",
    metadata,
    _id("utility_id", ForeignKey("utilities.id"), primary_key=True),
    _id(primary_key=True),
    Column("position", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    _id("tariff_id", nullable=False),
    Column("monthly_charge", ExactDecimal, nullable=False),
    Column("dlc_credit_per_event", ExactDecimal, nullable=False),
    Column("dlc_credit_per_kwh", ExactDecimal, nullable=False),
    ForeignKeyConstraint(["utility_id", "tariff_id"], ["tariffs.utility_id", "tariffs.id"]),
)

feeders = Table(
    "feeders",
    metadata,
    _id("utility_id", ForeignKey("utilities.id"), primary_key=True),
    _id(primary_key=True),
    Column("position", Integer, nullable=False),
    Column("capacity_kw", ExactDecimal, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    _id("utility_id", ForeignKey("utilities.id"), primary_key=True),
    _id(primary_key=True),
    Column("position", Integer, nullable=False),
    Column("name", String(200), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    _id(primary_key=True),
    _id("utility_id", nullable=False),
    _id("customer_id", nullable=False),
    Column("position", Integer, nullable=False),
    ForeignKeyConstraint(["utility_id", "customer_id"], ["customers.utility_id", "customers.id"]),
)

premises = Table(
    "premises",
    metadata,
    _id(primary_key=True),
    _id("utility_id", ForeignKey("utilities.id"), nullable=False, index=True),
    _id("account_id", ForeignKey("accounts.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    _id("feeder_id"),
    Column("esi_communicating", Boolean, nullable=False),
    _id("eumd_id", unique=True),
    Column("eumd_interval_s", Integer),
    Column("visitor_policy", String(16), nullable=False),
    Column("permitted_pevs", Text),  # JSON list, or NULL for "any PEV"
)

portals = Table(
    "portals",
    metadata,
    _id(primary_key=True),
    _id("premise_id", ForeignKey("premises.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("type", String(16), nullable=False),
    Column("amps", Integer),
    Column("max_kw", ExactDecimal),
)

pevs = Table(
    "pevs",
    metadata,
    _id(primary_key=True),
    _id("utility_id", ForeignKey("utilities.id"), nullable=False, index=True),
    _id("owner_account", ForeignKey("accounts.id"), nullable=False),
    Column("position", Integer, nullable=False),
    _id("program_id"),
    _id("home_premise_id", ForeignKey("premises.id")),
    Column("communicating", Boolean, nullable=False),
    Column("max_kw", ExactDecimal, nullable=False),
)

clearinghouses = Table(
    "clearinghouses",
    metadata,
    _id(primary_key=True),
    Column("name", String(200), nullable=False),
)

clearinghouse_members = Table(
    "clearinghouse_members",
    metadata,
    _id("clearinghouse_id", ForeignKey("clearinghouses.id"), primary_key=True),
    _id("utility_id", primary_key=True),
    Column("position", Integer, nullable=False),
)


# --- charging sessions (the utility's record of each session, seed 1.6.x "Utility records") --

gateway_credentials = Table(
    "gateway_credentials",
    metadata,
    _id("premise_id", ForeignKey("premises.id", ondelete="CASCADE"), primary_key=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("issued_at", UtcDateTime, nullable=False),
)

# Registry ids are kept as plain strings here (no foreign keys): a session's history must
# survive the premise or PEV later leaving the registry.
sessions = Table(
    "sessions",
    metadata,
    _id("premise_id", primary_key=True),
    _id("session_id", primary_key=True),
    _id("utility_id", nullable=False),
    _id("portal_id", nullable=False),
    _id("pev_id"),
    Column("plugged_in_at", UtcDateTime, nullable=False),
    Column("case", String(16), nullable=False),
    Column("site", String(16), nullable=False),
    Column("bound", Boolean, nullable=False),
    Column("incentive", Boolean, nullable=False),
    _id("payer_account", nullable=False),
    _id("tariff_id", nullable=False),
    _id("program_id"),
    Column("fallback_reason", String(32)),
    Column("why", String(200), nullable=False),
    Column("energy_request", Text),  # the PEV's EnergyRequest as JSON
    Column("energy_available", Text),  # the utility's answer as JSON
    Column("ended_at", UtcDateTime),
    Column("reported_energy_wh", Integer),
    Column("metered", Boolean),
    Column("closed", Boolean, nullable=False, default=False),
)

interval_readings = Table(
    "interval_readings",
    metadata,
    _id("eumd_id", primary_key=True),
    _id("session_id", primary_key=True),
    Column("interval_start_at", UtcDateTime, primary_key=True),
    _id("premise_id", nullable=False),
    _id("pev_id"),
    Column("interval_s", Integer, nullable=False),
    Column("energy_wh", Integer, nullable=False),
)

session_reports = Table(
    "session_reports",
    metadata,
    _id("premise_id", primary_key=True),
    _id("session_id", primary_key=True),
    _id("portal_id", nullable=False),
    _id("pev_id"),
    Column("started_at", UtcDateTime, nullable=False),
    Column("ended_at", UtcDateTime, nullable=False),
    Column("energy_wh", Integer, nullable=False),
    Column("metered", Boolean, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

# The ledger: every priced line of energy, appended, never edited. A bill claims lines;
# late data and corrections become new lines that reference what they correct.
charges = Table(
    "charges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _id("utility_id", nullable=False),
    _id("account_id", nullable=False, index=True),
    _id("premise_id", nullable=False),
    _id("session_id"),
    Column("cycle", String(7), nullable=False),  # billing cycle, "YYYY-MM" of its first day
    Column("local_date", Date),  # the utility-local day the energy was drawn (for charts)
    Column("kind", String(24), nullable=False),
    Column("label", String(64), nullable=False),
    _id("tariff_id"),
    Column("price_per_kwh", ExactDecimal),
    Column("energy_wh", Integer, nullable=False),
    Column("amount", ExactDecimal, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("corrects_id", Integer, ForeignKey("charges.id")),
    Column("bill_id", String(64), index=True),
    Column("created_at", UtcDateTime, nullable=False),
)


# --- bills: issued once, never changed ------------------------------------------------------

bills = Table(
    "bills",
    metadata,
    _id(primary_key=True),
    _id("utility_id", nullable=False),
    _id("account_id", nullable=False),
    Column("cycle", String(7), nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("total", ExactDecimal, nullable=False),
    Column("currency", String(3), nullable=False),
    UniqueConstraint("account_id", "cycle", name="uq_bills_account_cycle"),
)

bill_lines = Table(
    "bill_lines",
    metadata,
    _id("bill_id", ForeignKey("bills.id"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("kind", String(24), nullable=False),
    Column("description", String(300), nullable=False),
    Column("label", String(64)),
    Column("energy_wh", Integer, nullable=False),
    Column("price_per_kwh", ExactDecimal),
    Column("amount", ExactDecimal, nullable=False),
    Column("sessions", Text, nullable=False),  # JSON list of session ids behind the line
    Column("corrects", String(64)),  # the earlier bill an adjustment corrects
)

bill_days = Table(
    "bill_days",
    metadata,
    _id("bill_id", ForeignKey("bills.id"), primary_key=True),
    Column("local_date", Date, primary_key=True),
    Column("label", String(64), primary_key=True),
    Column("energy_wh", Integer, nullable=False),
    Column("amount", ExactDecimal, nullable=False),
)

# --- hourly prices a utility publishes for its real-time-pricing tariffs ---------------------

hourly_prices = Table(
    "hourly_prices",
    metadata,
    _id("utility_id", ForeignKey("utilities.id"), primary_key=True),
    _id("tariff_id", primary_key=True),
    Column("start_at", UtcDateTime, primary_key=True),  # the hour's first instant
    Column("price_per_kwh", ExactDecimal, nullable=False),
)


# --- load-control events and who took part (seed: direct load control) -----------------------

load_control_events = Table(
    "load_control_events",
    metadata,
    _id(primary_key=True),
    _id("utility_id", ForeignKey("utilities.id"), nullable=False),
    _id("feeder_id"),  # NULL: the whole utility
    Column("start_at", UtcDateTime, nullable=False),
    Column("end_at", UtcDateTime, nullable=False),
    Column("cap_w", Integer),
    Column("curtail_pct", Integer),
    Column("declared_at", UtcDateTime, nullable=False),
)

event_participation = Table(
    "event_participation",
    metadata,
    _id("event_id", ForeignKey("load_control_events.id"), primary_key=True),
    _id("premise_id", primary_key=True),
    _id("session_id", primary_key=True),
    _id("pev_id", nullable=False),
    _id("account_id", nullable=False, index=True),
    Column("cycle", String(7), nullable=False),
    Column("curtailed_wh", Integer, nullable=False),
    Column("credit", ExactDecimal, nullable=False),
    Column("bill_id", String(64)),
)


# --- charging plans the utility made (active load management re-plans a whole feeder) -------
# Every Energy Available the utility computes for a session, in order: `version` is the
# cursor a gateway polls with, `planned_at` the instant the plan is in force from.
schedule_versions = Table(
    "schedule_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=True),
    _id("utility_id", nullable=False),
    _id("premise_id", nullable=False),
    _id("session_id", nullable=False),
    _id("feeder_id"),
    Column("planned_at", UtcDateTime, nullable=False),
    Column("reason", String(200), nullable=False),
    Column("energy_available", Text, nullable=False),  # EnergyAvailable as JSON, from planned_at
)
Index("ix_schedule_versions_premise", schedule_versions.c.premise_id, schedule_versions.c.version)
Index(
    "ix_schedule_versions_session",
    schedule_versions.c.premise_id,
    schedule_versions.c.session_id,
    schedule_versions.c.version,
)


# Rating and billing look sessions up by (premise, session): without these, every session
# closed scans the whole readings and ledger tables.
Index(
    "ix_interval_readings_session",
    interval_readings.c.premise_id,
    interval_readings.c.session_id,
    interval_readings.c.interval_start_at,
)
Index("ix_charges_session", charges.c.premise_id, charges.c.session_id)
Index("ix_charges_unbilled", charges.c.utility_id, charges.c.bill_id, charges.c.cycle)
