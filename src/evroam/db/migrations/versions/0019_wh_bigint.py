"""every Wh and meter-register column in 64 bits (BIGINT on PostgreSQL)

A busy DC station's lifetime register passes 2^31 Wh; PostgreSQL's integer refused every
StartTransaction and MeterValues of such a station (issue 15). SQLite's INTEGER already
holds 64 bits, so there nothing changes (db/types.py, WattHours). On PostgreSQL each table
is altered in one statement: one rewrite per table, not one per column.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 09:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WH_COLUMNS: dict[str, tuple[str, ...]] = {
    'sessions': ('reported_energy_wh',),
    'interval_readings': ('energy_wh',),
    'session_reports': ('energy_wh',),
    'charges': ('energy_wh',),
    'roaming_claims': ('energy_wh',),
    'bill_lines': ('energy_wh',),
    'event_participation': ('curtailed_wh',),
    'ch_transactions': ('energy_wh',),
    'ocpp_transactions': (
        'meter_start_wh',
        'last_register_wh',
        'energy_wh',
        'boundary_wh',
        'stop_register_wh',
    ),
    'ocpp_meter_samples': ('register_wh',),
    'ocpp_register_resets': ('register_before_wh', 'register_after_wh'),
}


def _alter(sql_type: str) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite: INTEGER is 64 bits already
    for table, columns in WH_COLUMNS.items():
        changes = ', '.join(f'ALTER COLUMN {c} TYPE {sql_type}' for c in columns)
        op.execute(f'ALTER TABLE {table} {changes}')


def upgrade() -> None:
    _alter('BIGINT')


def downgrade() -> None:
    # Refused by PostgreSQL ("integer out of range") while a value past 2^31 is held:
    # a downgrade never truncates energy.
    _alter('INTEGER')
