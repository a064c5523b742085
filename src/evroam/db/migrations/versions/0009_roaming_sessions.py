"""roaming sessions at the utility: home utility, billing option, claims sent, postings

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('home_utility', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('billing_option', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('authorization_reference', sa.String(length=64), nullable=True))
    with op.batch_alter_table('charges', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.String(length=120), nullable=True))
    op.create_table('roaming_claims',
    sa.Column('id', sa.String(length=160), nullable=False),
    sa.Column('utility_id', sa.String(length=64), nullable=False),
    sa.Column('premise_id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('energy_wh', sa.Integer(), nullable=False),
    sa.Column('amount', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', evroam.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roaming_claims')),
    sa.UniqueConstraint('premise_id', 'session_id', 'seq', name='uq_roaming_claims_session_seq')
    )
    op.create_table('roaming_postings',
    sa.Column('transaction_id', sa.String(length=160), nullable=False),
    sa.Column('utility_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=False),
    sa.Column('premise_id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('billed_amount', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('posted_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('transaction_id', name=op.f('pk_roaming_postings'))
    )


def downgrade() -> None:
    op.drop_table('roaming_postings')
    op.drop_table('roaming_claims')
    with op.batch_alter_table('charges', schema=None) as batch_op:
        batch_op.drop_column('origin')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('authorization_reference')
        batch_op.drop_column('billing_option')
        batch_op.drop_column('home_utility')
