"""only unbilled ledger lines are indexed for billing

A billing run writes the lines it rates already on their bill: those lines need no entry
in an index of the unbilled, and a bill's lines are read by account, so the index on
bill_id alone goes.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('charges', schema=None) as batch_op:
        batch_op.drop_index('ix_charges_unbilled')
        batch_op.drop_index('ix_charges_bill_id')
        batch_op.create_index(
            'ix_charges_unbilled',
            ['utility_id', 'cycle'],
            unique=False,
            postgresql_where=sa.text('bill_id IS NULL'),
            sqlite_where=sa.text('bill_id IS NULL'),
        )


def downgrade() -> None:
    with op.batch_alter_table('charges', schema=None) as batch_op:
        batch_op.drop_index('ix_charges_unbilled')
        batch_op.create_index('ix_charges_bill_id', ['bill_id'], unique=False)
        batch_op.create_index('ix_charges_unbilled', ['utility_id', 'bill_id', 'cycle'], unique=False)
