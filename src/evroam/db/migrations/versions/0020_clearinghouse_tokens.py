"""clearinghouse identity: registration token A single-use with an expiry, token B wide
enough to be stored encrypted, which member owns which premise, CDRs looked up by
authorization

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0020'
down_revision: str | None = '0019'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('ch_members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_a_issued_at', evroam.db.types.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('token_a_used_at', evroam.db.types.UtcDateTime(timezone=True), nullable=True))
        batch_op.alter_column('token_b', existing_type=sa.String(length=300), type_=sa.String(length=600), existing_nullable=True)
    # An A held before this revision was issued when the member was (last) registered; a
    # member that already exchanged it for a token C has used it.
    op.execute(
        "UPDATE ch_members SET token_a_issued_at = registered_at "
        "WHERE token_a_sha256 IS NOT NULL"
    )
    op.execute(
        "UPDATE ch_members SET token_a_used_at = credentials_at "
        "WHERE token_a_sha256 IS NOT NULL AND token_c_sha256 IS NOT NULL"
    )
    op.create_table('ch_locations',
    sa.Column('premise_id', sa.String(length=64), nullable=False),
    sa.Column('utility_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('premise_id', name=op.f('pk_ch_locations'))
    )
    op.create_index('ix_ch_locations_utility', 'ch_locations', ['utility_id'], unique=False)
    op.create_index('ix_ch_transactions_authorization', 'ch_transactions', ['authorization_reference'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_ch_transactions_authorization', table_name='ch_transactions')
    op.drop_index('ix_ch_locations_utility', table_name='ch_locations')
    op.drop_table('ch_locations')
    # The earlier code cannot read an encrypted token B (nor would it fit): forgotten, as at
    # OCPI credentials DELETE; the member's next PUT /credentials gives it again.
    op.execute("UPDATE ch_members SET token_b = NULL WHERE token_b LIKE 'fernet:%'")
    with op.batch_alter_table('ch_members', schema=None) as batch_op:
        batch_op.alter_column('token_b', existing_type=sa.String(length=600), type_=sa.String(length=300), existing_nullable=True)
        batch_op.drop_column('token_a_used_at')
        batch_op.drop_column('token_a_issued_at')
