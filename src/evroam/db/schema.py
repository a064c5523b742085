"""Tables. Every party uses the same schema; a process only fills the tables it owns.

One module on purpose (about 700 lines): Alembic's migrations are checked against this one
metadata, and the foreign keys cross sections. Each section names the party that owns it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
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

from evroam.db.types import ExactDecimal, UtcDateTime, WattHours

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
    Column("reported_energy_wh", WattHours),
    Column("metered", Boolean),
    Column("closed", Boolean, nullable=False, default=False),
    # roaming (seed 1.6.4): the PEV's home utility as the clearinghouse confirmed it, the
    # billing the customer chose, and the reference its charge transactions quote
    _id("home_utility"),
    Column("billing_option", String(16)),
    Column("authorization_reference", String(64)),
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
    Column("energy_wh", WattHours, nullable=False),
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
    Column("energy_wh", WattHours, nullable=False),
    Column("metered", Boolean, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    # "gateway", or "utility" when the utility closed a session its gateway fell silent on;
    # the gateway's own report, arriving later, replaces the utility's (docs/sessions.md).
    Column("written_by", String(16), nullable=False, server_default="gateway"),
    CheckConstraint("written_by IN ('gateway', 'utility')", name="ck_session_reports_written_by"),
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
    Column("energy_wh", WattHours, nullable=False),
    Column("amount", ExactDecimal, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("corrects_id", Integer, ForeignKey("charges.id")),
    Column("bill_id", String(64)),  # the bill the line is on; NULL until billed
    Column("created_at", UtcDateTime, nullable=False),
    # posted roaming charges: the utility where the energy was drawn, named for the bill
    Column("origin", String(120)),
)


# --- roaming, the utility's side (seed 1.6.4) -----------------------------------------------

roaming_claims = Table(
    "roaming_claims",
    metadata,
    Column("id", String(160), primary_key=True),  # the charge transaction's id
    _id("utility_id", nullable=False),  # the roaming utility that claims
    _id("premise_id", nullable=False),
    _id("session_id", nullable=False),
    Column("seq", Integer, nullable=False),
    Column("energy_wh", WattHours, nullable=False),  # signed: a credit is negative
    Column("amount", ExactDecimal, nullable=False),  # signed
    Column("body", Text, nullable=False),  # the ChargeTransaction as sent
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),  # acknowledged by the clearinghouse
    # Refused by the clearinghouse (a 4xx other than 401/403): set aside for review, not
    # retried, so the claims behind it flow on.
    Column("refused_at", UtcDateTime),
    Column("refused_reason", String(300)),
    UniqueConstraint("premise_id", "session_id", "seq", name="uq_roaming_claims_session_seq"),
)

roaming_postings = Table(
    "roaming_postings",
    metadata,
    Column("transaction_id", String(160), primary_key=True),
    _id("utility_id", nullable=False),  # the home utility that posted it
    _id("account_id", nullable=False),
    _id("premise_id", nullable=False),
    _id("session_id", nullable=False),
    Column("body", Text, nullable=False),  # the ChargeTransaction as received
    Column("billed_amount", ExactDecimal, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("posted_at", UtcDateTime, nullable=False),
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
    # The daily chart, read and written whole: JSON [[local date, period label, Wh, amount]],
    # by date and label (a row per day and period cost a row, a key and a foreign-key check).
    Column("days", Text, nullable=False, server_default="[]"),
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
    Column("energy_wh", WattHours, nullable=False),
    Column("price_per_kwh", ExactDecimal),
    Column("amount", ExactDecimal, nullable=False),
    Column("sessions", Text, nullable=False),  # JSON list of session ids behind the line
    Column("corrects", String(64)),  # the earlier bill an adjustment corrects
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
    # Set once by the operator's cancel: the event ends then (or never starts) for every
    # plan and credit from that instant on; the declared window stays as declared.
    Column("cancelled_at", UtcDateTime),
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
    Column("curtailed_wh", WattHours, nullable=False),
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
# Only the lines still to bill: a billing run finds them without reading the billed past,
# and a line written already on its bill (bill_store.run_cycle) never enters the index.
Index(
    "ix_charges_unbilled",
    charges.c.utility_id,
    charges.c.cycle,
    postgresql_where=charges.c.bill_id.is_(None),
    sqlite_where=charges.c.bill_id.is_(None),
)


# --- portal: sign-in for customers and operators (docs/portal.md) --------------------------
# No foreign key to customers: a territory load that drops a customer must not be blocked by
# a login; sign-in checks the customer still exists instead.
portal_users = Table(
    "portal_users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("role", String(16), nullable=False),  # customer | operator
    _id("utility_id", nullable=False),
    _id("customer_id"),  # set for customers: whose accounts they see
    Column("password_hash", String(200), nullable=False),  # argon2id, PHC string
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("role IN ('customer', 'operator')", name="ck_portal_users_role"),
    CheckConstraint(
        "(role = 'customer') = (customer_id IS NOT NULL)", name="ck_portal_users_customer"
    ),
)

# A signed-in browser: the cookie carries a random id, the database its digest. Signing out
# deletes the row, so a copied cookie stops working at once (docs/security.md).
portal_sessions = Table(
    "portal_sessions",
    metadata,
    Column("id_digest", String(64), primary_key=True),  # SHA-256 hex of the cookie's id
    Column(
        "username",
        String(64),
        ForeignKey("portal_users.username", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Failed sign-ins, by key ("user:NAME" or "addr:IP"), counted in a sliding window to throttle
# password guessing across every process of the utility.
portal_sign_in_failures = Table(
    "portal_sign_in_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_portal_sign_in_failures_key_at", "key", "at"),
)


# --- clearinghouse: members, roaming tokens, authorizations, transactions, statements -------
# The clearinghouse's own database (its process fills only these tables). Tokens are stored
# as SHA-256 digests, except token B, which the clearinghouse must present to the member.

ch_members = Table(
    "ch_members",
    metadata,
    _id("utility_id", primary_key=True),
    Column("token_a_sha256", String(64)),  # registration token A (NULL: none issued yet)
    Column("token_c_sha256", String(64), unique=True),  # the member's credentials token C
    # What the clearinghouse sends when calling the member: encrypted ("fernet:...") when
    # EVROAM_CH_TOKEN_KEY is set (it must be presented, so it cannot be a digest).
    Column("token_b", String(600)),
    Column("url", String(500)),  # the member's base URL
    Column("registered_at", UtcDateTime, nullable=False),
    Column("credentials_at", UtcDateTime),
    Column("token_a_issued_at", UtcDateTime),  # A expires EVROAM_REGISTRATION_TTL_DAYS after
    Column("token_a_used_at", UtcDateTime),  # A is single-use: set at the exchange
)

# Which member's territory each premise is in (from the territory the clearinghouse loads):
# a member asks for authorizations only at its own premises.
ch_locations = Table(
    "ch_locations",
    metadata,
    _id("premise_id", primary_key=True),
    _id("utility_id", nullable=False),
)
Index("ix_ch_locations_utility", ch_locations.c.utility_id)

ch_tokens = Table(
    "ch_tokens",
    metadata,
    _id("pev_id", primary_key=True),
    _id("home_utility", nullable=False),
    _id("account_id", nullable=False),
    _id("home_premise_id"),
    _id("program_id", nullable=False),
    Column("billing_options", String(64), nullable=False),  # comma-separated
    Column("valid", Boolean, nullable=False),
    Column("last_updated", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)
Index("ix_ch_tokens_home", ch_tokens.c.home_utility, ch_tokens.c.pev_id)

ch_authorizations = Table(
    "ch_authorizations",
    metadata,
    _id("roaming_utility", primary_key=True),
    _id("premise_id", primary_key=True),
    _id("session_id", primary_key=True),
    _id("authorization_reference", nullable=False, unique=True),
    _id("pev_id", nullable=False),
    _id("home_utility", nullable=False),
    Column("answer", Text, nullable=False),  # the AuthorizationInfo given, as JSON
    Column("authorized_at", UtcDateTime, nullable=False),
)

ch_periods = Table(
    "ch_periods",
    metadata,
    Column("period", String(7), primary_key=True),  # UTC month, YYYY-MM
    Column("issued_at", UtcDateTime),  # NULL: open; set once, never changed
)

ch_transactions = Table(
    "ch_transactions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # arrival order
    _id("roaming_utility", nullable=False),
    Column("id", String(160), nullable=False),
    _id("home_utility", nullable=False),
    _id("authorization_reference", nullable=False),
    _id("pev_id", nullable=False),
    _id("premise_id", nullable=False),
    _id("session_id", nullable=False),
    Column("billing_option", String(16), nullable=False),
    Column("end_at", UtcDateTime, nullable=False),
    Column("energy_wh", WattHours, nullable=False),
    Column("owed", ExactDecimal, nullable=False),  # signed: negative for a credit
    Column("currency", String(3), nullable=False),
    Column("credit", Boolean, nullable=False),
    Column("credit_of", String(160)),
    Column("body", Text, nullable=False),  # the ChargeTransaction as received, canonical JSON
    Column("period", String(7), ForeignKey("ch_periods.period"), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("pending", Boolean, nullable=False),  # not yet acknowledged by the home utility
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(300)),
    Column("forwarded_at", UtcDateTime),
    _id("posted_account_id"),
    Column("billed_amount", ExactDecimal),  # from the home utility's PostingAck
    # True: acknowledged after its period was issued (the issued statement shows it unbilled)
    Column("billed_after_issue", Boolean),
    UniqueConstraint("roaming_utility", "id", name="uq_ch_transactions_roaming_id"),
)
Index("ix_ch_transactions_pending", ch_transactions.c.pending, ch_transactions.c.seq)
Index("ix_ch_transactions_period", ch_transactions.c.period, ch_transactions.c.seq)
Index("ix_ch_transactions_authorization", ch_transactions.c.authorization_reference)
Index(
    "ix_ch_transactions_session",
    ch_transactions.c.roaming_utility,
    ch_transactions.c.session_id,
)

ch_positions = Table(
    "ch_positions",
    metadata,
    Column("period", String(7), ForeignKey("ch_periods.period"), primary_key=True),
    _id("utility_id", primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("receivable", ExactDecimal, nullable=False),
    Column("payable", ExactDecimal, nullable=False),
    Column("net", ExactDecimal, nullable=False),
    Column("billed", ExactDecimal, nullable=False),
    Column("difference", ExactDecimal, nullable=False),
    Column("transactions", Integer, nullable=False),
    Column("unbilled", Integer, nullable=False),
)

ch_statement_lines = Table(
    "ch_statement_lines",
    metadata,
    Column("period", String(7), ForeignKey("ch_periods.period"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    _id("payer_utility", nullable=False),
    _id("payee_utility", nullable=False),
    Column("amount", ExactDecimal, nullable=False),
    Column("currency", String(3), nullable=False),
)


# --- OCPP: charging stations as premise gateways (docs/ocpp.md) ------------------------------
# `stations` and `station_evses` are part of the territory registry (the file names them);
# the `ocpp_*` tables are the CSMS's runtime record, kept by station id without foreign keys
# so that history survives a station leaving the registry.

stations = Table(
    "stations",
    metadata,
    Column("id", String(48), primary_key=True),
    _id("premise_id", ForeignKey("premises.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("password_sha256", String(64)),
)

station_evses = Table(
    "station_evses",
    metadata,
    Column("station_id", String(48), ForeignKey("stations.id"), primary_key=True),
    Column("evse_id", Integer, primary_key=True),
    _id("portal_id", ForeignKey("portals.id"), nullable=False),
    Column("position", Integer, nullable=False),
)

ocpp_station_state = Table(
    "ocpp_station_state",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("protocol", String(8), nullable=False),
    Column("vendor", String(50)),
    Column("model", String(50)),
    Column("serial", String(50)),
    Column("firmware", String(50)),
    Column("first_sync_at", UtcDateTime, nullable=False),  # first BootNotification answered
    Column("last_boot_at", UtcDateTime, nullable=False),
    Column("boots", Integer, nullable=False),
)

ocpp_connector_status = Table(
    "ocpp_connector_status",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("evse_id", Integer, primary_key=True),
    Column("connector_id", Integer, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("error_code", String(64)),
    Column("status_at", UtcDateTime),
    Column("received_at", UtcDateTime, nullable=False),
)

ocpp_transactions = Table(
    "ocpp_transactions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # 1.6 transactionId
    Column("station_id", String(48), nullable=False),
    Column("transaction_ref", String(64), nullable=False),
    Column("protocol", String(8), nullable=False),
    _id("premise_id", nullable=False),
    _id("session_id", nullable=False),
    Column("evse_id", Integer, nullable=False),
    _id("portal_id", nullable=False),
    Column("id_token", String(64)),
    Column("start_key", String(64)),  # 1.6: digest of the StartTransaction, for retries
    Column("started_at", UtcDateTime, nullable=False),
    Column("meter_start_wh", WattHours),
    Column("bind_done", Boolean, nullable=False),
    Column("bound", Boolean, nullable=False),
    Column("incentive", Boolean, nullable=False),
    Column("case", String(16)),
    Column("message", String(200)),
    # the register chain: the last sample applied, and the energy since the start
    Column("last_at", UtcDateTime, nullable=False),
    Column("last_register_wh", WattHours),
    Column("energy_wh", WattHours, nullable=False),
    # interval readings are emitted up to this EUMD interval boundary
    Column("boundary_at", UtcDateTime, nullable=False),
    Column("boundary_wh", WattHours, nullable=False),
    Column("stopped", Boolean, nullable=False),
    Column("stopped_at", UtcDateTime),
    Column("stop_register_wh", WattHours),
    Column("stop_reason", String(32)),
    Column("reported", Boolean, nullable=False),
    Column("max_seq_no", Integer, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("station_id", "transaction_ref", name="uq_ocpp_transactions_ref"),
    UniqueConstraint("station_id", "start_key", name="uq_ocpp_transactions_start_key"),
)
Index(
    "ix_ocpp_transactions_session",
    ocpp_transactions.c.premise_id,
    ocpp_transactions.c.session_id,
)

ocpp_meter_samples = Table(
    "ocpp_meter_samples",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("transaction_ref", String(64), primary_key=True),
    Column("sampled_at", UtcDateTime, primary_key=True),
    Column("register_wh", WattHours, nullable=False),
    Column("applied", Boolean, nullable=False),  # False: late (behind the chain), kept only
)

ocpp_tx_events = Table(
    "ocpp_tx_events",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("transaction_ref", String(64), primary_key=True),
    Column("seq_no", Integer, primary_key=True),
    Column("event_type", String(16), nullable=False),
    Column("trigger_reason", String(40)),
    Column("offline", Boolean, nullable=False),
    Column("stamped_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

ocpp_seq_gaps = Table(
    "ocpp_seq_gaps",
    metadata,
    Column("station_id", String(48), primary_key=True),
    Column("transaction_ref", String(64), primary_key=True),
    Column("seq_no", Integer, primary_key=True),
    Column("detected_at", UtcDateTime, nullable=False),
    Column("filled_at", UtcDateTime),
)

ocpp_register_resets = Table(
    "ocpp_register_resets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(48), nullable=False),
    Column("transaction_ref", String(64), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("register_before_wh", WattHours, nullable=False),
    Column("register_after_wh", WattHours, nullable=False),
    Column("detected_at", UtcDateTime, nullable=False),
)

# Messages or readings the CSMS acknowledged but would not bill: flagged for review.
ocpp_quarantine = Table(
    "ocpp_quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(48), nullable=False, index=True),
    Column("transaction_ref", String(64)),
    Column("action", String(40), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("detail", String(300), nullable=False),
    Column("stamped_at", UtcDateTime),
    Column("payload", Text, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("reviewed", Boolean, nullable=False),
)
