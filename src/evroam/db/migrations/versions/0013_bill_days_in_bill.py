"""a bill's daily chart is kept in the bill's row

The daily kWh and cost by period (the bill's chart) are only ever read and written whole,
with the bill. As a row per day and period they cost a billing run a row, a key entry and
a foreign-key check each: more than half the time of saving a bill. They move into a JSON
column of the bill, [[local date, period label, Wh, amount], ...] by date and label; the
bills already issued keep exactly their figures.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 13:20:00
"""

import json
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import sqlalchemy as sa
from alembic import context, op

import evroam.db.types

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# The same move in SQL, for `evroam db upgrade --sql` (offline: no rows to read in Python).
OFFLINE_DAYS = {
    'postgresql': (
        'UPDATE bills SET days = moved.chart FROM ('
        'SELECT bill_id, json_agg(json_build_array(local_date::text, label, energy_wh, '
        'amount::text) ORDER BY local_date, label)::text AS chart '
        'FROM bill_days GROUP BY bill_id) AS moved WHERE bills.id = moved.bill_id'
    ),
    'sqlite': (
        'UPDATE bills SET days = (SELECT json_group_array(json_array(local_date, label, '
        'energy_wh, CAST(amount AS TEXT))) FROM (SELECT * FROM bill_days '
        'WHERE bill_days.bill_id = bills.id ORDER BY local_date, label)) '
        'WHERE id IN (SELECT bill_id FROM bill_days)'
    ),
}


def upgrade() -> None:
    if context.is_offline_mode():
        op.add_column(
            'bills', sa.Column('days', sa.Text(), server_default=sa.text("'[]'"), nullable=False)
        )
        op.execute(OFFLINE_DAYS[context.get_context().dialect.name])
        op.drop_table('bill_days')
        return
    conn = op.get_bind()
    # Added NOT NULL with a default, in place: on SQLite a batch would recreate `bills`,
    # which its lines' foreign keys forbid once bills exist.
    op.add_column(
        'bills', sa.Column('days', sa.Text(), server_default=sa.text("'[]'"), nullable=False)
    )
    days: dict[str, list[list[object]]] = {}
    for bill_id, local_date, label, energy_wh, amount in conn.execute(
        sa.text(
            'SELECT bill_id, local_date, label, energy_wh, amount FROM bill_days '
            'ORDER BY bill_id, local_date, label'
        )
    ):
        days.setdefault(bill_id, []).append([str(local_date), label, energy_wh, str(amount)])
    if days:
        conn.execute(
            sa.text('UPDATE bills SET days = :days WHERE id = :id'),
            [
                {'days': json.dumps(chart, separators=(',', ':')), 'id': bill_id}
                for bill_id, chart in days.items()
            ],
        )
    op.drop_table('bill_days')


def downgrade() -> None:
    conn = op.get_bind()
    days_table = op.create_table('bill_days',
    sa.Column('bill_id', sa.String(length=64), nullable=False),
    sa.Column('local_date', sa.Date(), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('energy_wh', sa.Integer(), nullable=False),
    sa.Column('amount', evroam.db.types.ExactDecimal(), nullable=False),
    sa.ForeignKeyConstraint(['bill_id'], ['bills.id'], name=op.f('fk_bill_days_bill_id_bills')),
    sa.PrimaryKeyConstraint('bill_id', 'local_date', 'label', name=op.f('pk_bill_days'))
    )
    day_rows = [
        {'bill_id': bill_id, 'local_date': date.fromisoformat(local_date), 'label': label,
         'energy_wh': wh, 'amount': Decimal(amount)}
        for bill_id, text in conn.execute(sa.text('SELECT id, days FROM bills'))
        for local_date, label, wh, amount in json.loads(text)
    ]
    if day_rows:
        op.bulk_insert(days_table, day_rows)
    with op.batch_alter_table('bills', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('days')
