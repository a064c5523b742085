"""a roaming claim the clearinghouse refuses is set aside with its reason, not retried

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 18:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0022'
down_revision: str | None = '0021'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('roaming_claims', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refused_at', evroam.db.types.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('refused_reason', sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('roaming_claims', schema=None) as batch_op:
        batch_op.drop_column('refused_reason')
        batch_op.drop_column('refused_at')
