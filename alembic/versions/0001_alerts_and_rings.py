"""alerts and rings

Revision ID: 0001
Revises: 
Create Date: 2026-11-29
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table('alerts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('alert_key', sa.String(length=300), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('ring_id', sa.String(length=64), nullable=True),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('first_flagged_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_scored_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('n_events', sa.Integer(), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts')),
    sa.UniqueConstraint('alert_key', name=op.f('uq_alerts_alert_key'))
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alerts_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_first_flagged_ts'), ['first_flagged_ts'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_ring_id'), ['ring_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_severity'), ['severity'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_status'), ['status'], unique=False)

    op.create_table('rings',
    sa.Column('ring_id', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('first_flagged_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('ring_id', name=op.f('pk_rings'))
    )
    with op.batch_alter_table('rings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rings_first_flagged_ts'), ['first_flagged_ts'], unique=False)

    op.create_table('ring_members',
    sa.Column('ring_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['ring_id'], ['rings.ring_id'], name=op.f('fk_ring_members_ring_id_rings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('ring_id', 'account_id', name=op.f('pk_ring_members'))
    )
    with op.batch_alter_table('ring_members', schema=None) as batch_op:
        batch_op.create_index('ix_ring_members_account_id', ['account_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('ring_members', schema=None) as batch_op:
        batch_op.drop_index('ix_ring_members_account_id')

    op.drop_table('ring_members')
    with op.batch_alter_table('rings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rings_first_flagged_ts'))

    op.drop_table('rings')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_status'))
        batch_op.drop_index(batch_op.f('ix_alerts_severity'))
        batch_op.drop_index(batch_op.f('ix_alerts_ring_id'))
        batch_op.drop_index(batch_op.f('ix_alerts_first_flagged_ts'))
        batch_op.drop_index(batch_op.f('ix_alerts_account_id'))

    op.drop_table('alerts')

