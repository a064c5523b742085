"""clearinghouse: members, roaming tokens, charge transactions, statements

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('ch_authorizations',
    sa.Column('roaming_utility', sa.String(length=64), nullable=False),
    sa.Column('premise_id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('authorization_reference', sa.String(length=64), nullable=False),
    sa.Column('pev_id', sa.String(length=64), nullable=False),
    sa.Column('home_utility', sa.String(length=64), nullable=False),
    sa.Column('answer', sa.Text(), nullable=False),
    sa.Column('authorized_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('roaming_utility', 'premise_id', 'session_id', name=op.f('pk_ch_authorizations')),
    sa.UniqueConstraint('authorization_reference', name=op.f('uq_ch_authorizations_authorization_reference'))
    )
    op.create_table('ch_members',
    sa.Column('utility_id', sa.String(length=64), nullable=False),
    sa.Column('token_a_sha256', sa.String(length=64), nullable=True),
    sa.Column('token_c_sha256', sa.String(length=64), nullable=True),
    sa.Column('token_b', sa.String(length=300), nullable=True),
    sa.Column('url', sa.String(length=500), nullable=True),
    sa.Column('registered_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('credentials_at', evroam.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('utility_id', name=op.f('pk_ch_members')),
    sa.UniqueConstraint('token_c_sha256', name=op.f('uq_ch_members_token_c_sha256'))
    )
    op.create_table('ch_periods',
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('issued_at', evroam.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('period', name=op.f('pk_ch_periods'))
    )
    op.create_table('ch_tokens',
    sa.Column('pev_id', sa.String(length=64), nullable=False),
    sa.Column('home_utility', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=False),
    sa.Column('home_premise_id', sa.String(length=64), nullable=True),
    sa.Column('program_id', sa.String(length=64), nullable=False),
    sa.Column('billing_options', sa.String(length=64), nullable=False),
    sa.Column('valid', sa.Boolean(), nullable=False),
    sa.Column('last_updated', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('received_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('pev_id', name=op.f('pk_ch_tokens'))
    )
    op.create_index('ix_ch_tokens_home', 'ch_tokens', ['home_utility', 'pev_id'], unique=False)
    op.create_table('ch_positions',
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('utility_id', sa.String(length=64), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('receivable', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('payable', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('net', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('billed', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('difference', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('transactions', sa.Integer(), nullable=False),
    sa.Column('unbilled', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['period'], ['ch_periods.period'], name=op.f('fk_ch_positions_period_ch_periods')),
    sa.PrimaryKeyConstraint('period', 'utility_id', 'currency', name=op.f('pk_ch_positions'))
    )
    op.create_table('ch_statement_lines',
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('payer_utility', sa.String(length=64), nullable=False),
    sa.Column('payee_utility', sa.String(length=64), nullable=False),
    sa.Column('amount', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.ForeignKeyConstraint(['period'], ['ch_periods.period'], name=op.f('fk_ch_statement_lines_period_ch_periods')),
    sa.PrimaryKeyConstraint('period', 'line_no', name=op.f('pk_ch_statement_lines'))
    )
    op.create_table('ch_transactions',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('roaming_utility', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=160), nullable=False),
    sa.Column('home_utility', sa.String(length=64), nullable=False),
    sa.Column('authorization_reference', sa.String(length=64), nullable=False),
    sa.Column('pev_id', sa.String(length=64), nullable=False),
    sa.Column('premise_id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('billing_option', sa.String(length=16), nullable=False),
    sa.Column('end_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('energy_wh', sa.Integer(), nullable=False),
    sa.Column('owed', evroam.db.types.ExactDecimal(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('credit', sa.Boolean(), nullable=False),
    sa.Column('credit_of', sa.String(length=160), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('received_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('pending', sa.Boolean(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('forwarded_at', evroam.db.types.UtcDateTime(timezone=True), nullable=True),
    sa.Column('posted_account_id', sa.String(length=64), nullable=True),
    sa.Column('billed_amount', evroam.db.types.ExactDecimal(), nullable=True),
    sa.Column('billed_after_issue', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['period'], ['ch_periods.period'], name=op.f('fk_ch_transactions_period_ch_periods')),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_ch_transactions')),
    sa.UniqueConstraint('roaming_utility', 'id', name='uq_ch_transactions_roaming_id')
    )
    op.create_index('ix_ch_transactions_pending', 'ch_transactions', ['pending', 'seq'], unique=False)
    op.create_index('ix_ch_transactions_period', 'ch_transactions', ['period', 'seq'], unique=False)
    op.create_index('ix_ch_transactions_session', 'ch_transactions', ['roaming_utility', 'session_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ch_transactions_session', table_name='ch_transactions')
    op.drop_index('ix_ch_transactions_period', table_name='ch_transactions')
    op.drop_index('ix_ch_transactions_pending', table_name='ch_transactions')
    op.drop_table('ch_transactions')
    op.drop_table('ch_statement_lines')
    op.drop_table('ch_positions')
    op.drop_index('ix_ch_tokens_home', table_name='ch_tokens')
    op.drop_table('ch_tokens')
    op.drop_table('ch_periods')
    op.drop_table('ch_members')
    op.drop_table('ch_authorizations')
