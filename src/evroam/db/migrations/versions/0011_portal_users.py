"""portal users and sign-in

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('portal_users',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('utility_id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=True),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('created_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('customer', 'operator')", name='ck_portal_users_role'),
    sa.CheckConstraint("(role = 'customer') = (customer_id IS NOT NULL)", name='ck_portal_users_customer'),
    sa.PrimaryKeyConstraint('username', name=op.f('pk_portal_users'))
    )


def downgrade() -> None:
    op.drop_table('portal_users')
