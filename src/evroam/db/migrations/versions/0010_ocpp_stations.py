"""OCPP stations registered to premises

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import evroam.db.types

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_AT = evroam.db.types.UtcDateTime


def upgrade() -> None:
    op.create_table('stations',
    sa.Column('id', sa.String(length=48), nullable=False),
    sa.Column('premise_id', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('password_sha256', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['premise_id'], ['premises.id'], name=op.f('fk_stations_premise_id_premises')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stations'))
    )
    with op.batch_alter_table('stations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stations_premise_id'), ['premise_id'], unique=False)

    op.create_table('station_evses',
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('evse_id', sa.Integer(), nullable=False),
    sa.Column('portal_id', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['portal_id'], ['portals.id'], name=op.f('fk_station_evses_portal_id_portals')),
    sa.ForeignKeyConstraint(['station_id'], ['stations.id'], name=op.f('fk_station_evses_station_id_stations')),
    sa.PrimaryKeyConstraint('station_id', 'evse_id', name=op.f('pk_station_evses'))
    )
    op.create_table('ocpp_station_state',
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('protocol', sa.String(length=8), nullable=False),
    sa.Column('vendor', sa.String(length=50), nullable=True),
    sa.Column('model', sa.String(length=50), nullable=True),
    sa.Column('serial', sa.String(length=50), nullable=True),
    sa.Column('firmware', sa.String(length=50), nullable=True),
    sa.Column('first_sync_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('last_boot_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('boots', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('station_id', name=op.f('pk_ocpp_station_state'))
    )
    op.create_table('ocpp_connector_status',
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('evse_id', sa.Integer(), nullable=False),
    sa.Column('connector_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('status_at', UTC_AT(timezone=True), nullable=True),
    sa.Column('received_at', UTC_AT(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('station_id', 'evse_id', 'connector_id', name=op.f('pk_ocpp_connector_status'))
    )
    op.create_table('ocpp_transactions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('transaction_ref', sa.String(length=64), nullable=False),
    sa.Column('protocol', sa.String(length=8), nullable=False),
    sa.Column('premise_id', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=64), nullable=False),
    sa.Column('evse_id', sa.Integer(), nullable=False),
    sa.Column('portal_id', sa.String(length=64), nullable=False),
    sa.Column('id_token', sa.String(length=64), nullable=True),
    sa.Column('start_key', sa.String(length=64), nullable=True),
    sa.Column('started_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('meter_start_wh', sa.Integer(), nullable=True),
    sa.Column('bind_done', sa.Boolean(), nullable=False),
    sa.Column('bound', sa.Boolean(), nullable=False),
    sa.Column('incentive', sa.Boolean(), nullable=False),
    sa.Column('case', sa.String(length=16), nullable=True),
    sa.Column('message', sa.String(length=200), nullable=True),
    sa.Column('last_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('last_register_wh', sa.Integer(), nullable=True),
    sa.Column('energy_wh', sa.Integer(), nullable=False),
    sa.Column('boundary_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('boundary_wh', sa.Integer(), nullable=False),
    sa.Column('stopped', sa.Boolean(), nullable=False),
    sa.Column('stopped_at', UTC_AT(timezone=True), nullable=True),
    sa.Column('stop_register_wh', sa.Integer(), nullable=True),
    sa.Column('stop_reason', sa.String(length=32), nullable=True),
    sa.Column('reported', sa.Boolean(), nullable=False),
    sa.Column('max_seq_no', sa.Integer(), nullable=False),
    sa.Column('received_at', UTC_AT(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ocpp_transactions')),
    sa.UniqueConstraint('station_id', 'start_key', name='uq_ocpp_transactions_start_key'),
    sa.UniqueConstraint('station_id', 'transaction_ref', name='uq_ocpp_transactions_ref')
    )
    with op.batch_alter_table('ocpp_transactions', schema=None) as batch_op:
        batch_op.create_index('ix_ocpp_transactions_session', ['premise_id', 'session_id'], unique=False)

    op.create_table('ocpp_meter_samples',
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('transaction_ref', sa.String(length=64), nullable=False),
    sa.Column('sampled_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('register_wh', sa.Integer(), nullable=False),
    sa.Column('applied', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('station_id', 'transaction_ref', 'sampled_at', name=op.f('pk_ocpp_meter_samples'))
    )
    op.create_table('ocpp_tx_events',
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('transaction_ref', sa.String(length=64), nullable=False),
    sa.Column('seq_no', sa.Integer(), nullable=False),
    sa.Column('event_type', sa.String(length=16), nullable=False),
    sa.Column('trigger_reason', sa.String(length=40), nullable=True),
    sa.Column('offline', sa.Boolean(), nullable=False),
    sa.Column('stamped_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('received_at', UTC_AT(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('station_id', 'transaction_ref', 'seq_no', name=op.f('pk_ocpp_tx_events'))
    )
    op.create_table('ocpp_seq_gaps',
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('transaction_ref', sa.String(length=64), nullable=False),
    sa.Column('seq_no', sa.Integer(), nullable=False),
    sa.Column('detected_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('filled_at', UTC_AT(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('station_id', 'transaction_ref', 'seq_no', name=op.f('pk_ocpp_seq_gaps'))
    )
    op.create_table('ocpp_register_resets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('transaction_ref', sa.String(length=64), nullable=False),
    sa.Column('at', UTC_AT(timezone=True), nullable=False),
    sa.Column('register_before_wh', sa.Integer(), nullable=False),
    sa.Column('register_after_wh', sa.Integer(), nullable=False),
    sa.Column('detected_at', UTC_AT(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ocpp_register_resets'))
    )
    op.create_table('ocpp_quarantine',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('station_id', sa.String(length=48), nullable=False),
    sa.Column('transaction_ref', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.String(length=300), nullable=False),
    sa.Column('stamped_at', UTC_AT(timezone=True), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('received_at', UTC_AT(timezone=True), nullable=False),
    sa.Column('reviewed', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ocpp_quarantine'))
    )
    with op.batch_alter_table('ocpp_quarantine', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ocpp_quarantine_station_id'), ['station_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ocpp_quarantine', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ocpp_quarantine_station_id'))
    op.drop_table('ocpp_quarantine')
    op.drop_table('ocpp_register_resets')
    op.drop_table('ocpp_seq_gaps')
    op.drop_table('ocpp_tx_events')
    op.drop_table('ocpp_meter_samples')
    with op.batch_alter_table('ocpp_transactions', schema=None) as batch_op:
        batch_op.drop_index('ix_ocpp_transactions_session')
    op.drop_table('ocpp_transactions')
    op.drop_table('ocpp_connector_status')
    op.drop_table('ocpp_station_state')
    op.drop_table('station_evses')
    with op.batch_alter_table('stations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stations_premise_id'))
    op.drop_table('stations')
