"""schedule versions: every Energy Available planned, polled by gateways

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('schedule_versions',
    sa.Column('version', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('utility_id', sa.String(length=64), nullable=False),
    sa.Column('premise_id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('feeder_id', sa.String(length=64), nullable=True),
    sa.Column('planned_at', evroam.db.types.UtcDateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('energy_available', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_schedule_versions'))
    )
    with op.batch_alter_table('schedule_versions', schema=None) as batch_op:
        batch_op.create_index('ix_schedule_versions_premise', ['premise_id', 'version'], unique=False)
        batch_op.create_index('ix_schedule_versions_session', ['premise_id', 'session_id', 'version'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('schedule_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_schedule_versions_session')
        batch_op.drop_index('ix_schedule_versions_premise')

    op.drop_table('schedule_versions')
