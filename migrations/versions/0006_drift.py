"""Schema drift: per-batch shape snapshots, drift events, reprocess batches and the `reprocess` trigger.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 20:20:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('schema_snapshots',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=False),
    sa.Column('fields', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('records', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['raw_batches.id'], name=op.f('fk_schema_snapshots_batch_id_raw_batches'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schema_snapshots')),
    sa.UniqueConstraint('batch_id', name=op.f('uq_schema_snapshots_batch_id'))
    )
    op.create_index('ix_schema_snapshots_source_id', 'schema_snapshots', ['source', 'id'], unique=False)
    op.create_table('drift_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('run_source_id', sa.BigInteger(), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=True),
    sa.Column('field', sa.Text(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('old', sa.Text(), nullable=True),
    sa.Column('new', sa.Text(), nullable=True),
    sa.Column('confidence', sa.Numeric(precision=4, scale=3), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('records', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('added', 'missing', 'renamed', 'type_changed')", name=op.f('ck_drift_events_kind')),
    sa.CheckConstraint("action IN ('mapped', 'rejected', 'failed', 'noted')", name=op.f('ck_drift_events_action')),
    sa.CheckConstraint('confidence BETWEEN 0 AND 1', name=op.f('ck_drift_events_confidence')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_drift_events_run_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_source_id'], ['run_sources.id'],
                            name=op.f('fk_drift_events_run_source_id_run_sources'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['batch_id'], ['raw_batches.id'], name=op.f('fk_drift_events_batch_id_raw_batches'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drift_events'))
    )
    op.create_index('ix_drift_events_source_id', 'drift_events', ['source', 'id'], unique=False)
    op.create_index('ix_drift_events_run_source_id', 'drift_events', ['run_source_id'], unique=False)
    op.add_column('raw_batches', sa.Column('record_ids', postgresql.ARRAY(sa.BigInteger()), nullable=True))
    op.drop_constraint(op.f('ck_runs_trigger'), 'runs', type_='check')
    op.create_check_constraint(op.f('ck_runs_trigger'), 'runs', "trigger IN ('schedule', 'api', 'cli', 'reprocess')")


def downgrade():
    op.execute("DELETE FROM runs WHERE trigger = 'reprocess'")
    op.drop_constraint(op.f('ck_runs_trigger'), 'runs', type_='check')
    op.create_check_constraint(op.f('ck_runs_trigger'), 'runs', "trigger IN ('schedule', 'api', 'cli')")
    op.drop_column('raw_batches', 'record_ids')
    op.drop_index('ix_drift_events_run_source_id', table_name='drift_events')
    op.drop_index('ix_drift_events_source_id', table_name='drift_events')
    op.drop_table('drift_events')
    op.drop_index('ix_schema_snapshots_source_id', table_name='schema_snapshots')
    op.drop_table('schema_snapshots')
