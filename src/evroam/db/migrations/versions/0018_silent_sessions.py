"""who wrote a session report: the gateway, or the utility closing a silent session

Revision ID: 0018
Revises: 0014
Create Date: 2026-12-05 13:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('session_reports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('written_by', sa.String(length=16), server_default='gateway', nullable=False))
        batch_op.create_check_constraint('ck_session_reports_written_by', "written_by IN ('gateway', 'utility')")


def downgrade() -> None:
    with op.batch_alter_table('session_reports', schema=None) as batch_op:
        batch_op.drop_constraint('ck_session_reports_written_by', type_='check')
        batch_op.drop_column('written_by')
