"""Run events and lease holders: retries, lost workers, resumes and failures of each source's part of a run.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 19:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('run_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('run_source_id', sa.BigInteger(), nullable=True),
    sa.Column('source', sa.String(length=100), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('retry', 'busy', 'interrupted', 'resumed', 'failed', 'fault')",
                       name=op.f('ck_run_events_kind')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_events_run_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_source_id'], ['run_sources.id'],
                            name=op.f('fk_run_events_run_source_id_run_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_events'))
    )
    op.add_column('source_leases', sa.Column('holder', sa.Text(), nullable=True))
    op.create_index('ix_run_events_run_id_id', 'run_events', ['run_id', 'id'], unique=False)
    # At most one active run per source, enforced by the database.
    op.create_index('ix_run_sources_active_source', 'run_sources', ['source'], unique=True,
                    postgresql_where=sa.text("status IN ('queued', 'running')"))


def downgrade():
    op.drop_index('ix_run_sources_active_source', table_name='run_sources')
    op.drop_index('ix_run_events_run_id_id', table_name='run_events')
    op.drop_table('run_events')
    op.drop_column('source_leases', 'holder')
