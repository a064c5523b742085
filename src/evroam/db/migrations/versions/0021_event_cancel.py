"""load-control events can be cancelled: when the operator cancelled one

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0021'
down_revision: str | None = '0020'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('load_control_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cancelled_at', evroam.db.types.UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('load_control_events', schema=None) as batch_op:
        batch_op.drop_column('cancelled_at')
