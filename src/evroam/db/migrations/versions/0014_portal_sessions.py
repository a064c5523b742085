"""portal sessions held server-side, and failed sign-ins for throttling

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('portal_sessions',
    sa.Column('id_digest', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('created_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['username'], ['portal_users.username'], name=op.f('fk_portal_sessions_username_portal_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id_digest', name=op.f('pk_portal_sessions'))
    )
    op.create_index(op.f('ix_portal_sessions_username'), 'portal_sessions', ['username'], unique=False)
    op.create_table('portal_sign_in_failures',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_portal_sign_in_failures'))
    )
    op.create_index('ix_portal_sign_in_failures_key_at', 'portal_sign_in_failures', ['key', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_portal_sign_in_failures_key_at', table_name='portal_sign_in_failures')
    op.drop_table('portal_sign_in_failures')
    op.drop_index(op.f('ix_portal_sessions_username'), table_name='portal_sessions')
    op.drop_table('portal_sessions')
