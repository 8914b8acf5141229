"""Repair runs: the `backfill` and `replay` triggers, and what a replay did to each reject.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 22:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.drop_constraint(op.f('ck_runs_trigger'), 'runs', type_='check')
    op.create_check_constraint(op.f('ck_runs_trigger'), 'runs',
                               "trigger IN ('schedule', 'api', 'cli', 'reprocess', 'backfill', 'replay')")
    op.add_column('rejected_records', sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('rejected_records', sa.Column('replay_run_id', sa.BigInteger(), nullable=True))
    op.add_column('rejected_records', sa.Column('replay_outcome', sa.String(length=16), nullable=True))
    op.create_check_constraint(op.f('ck_rejected_records_replay_outcome'), 'rejected_records',
                               "replay_outcome IN ('loaded', 'rejected')")


def downgrade():
    op.drop_constraint(op.f('ck_rejected_records_replay_outcome'), 'rejected_records', type_='check')
    op.drop_column('rejected_records', 'replay_outcome')
    op.drop_column('rejected_records', 'replay_run_id')
    op.drop_column('rejected_records', 'replayed_at')
    op.execute("DELETE FROM runs WHERE trigger IN ('backfill', 'replay')")
    op.drop_constraint(op.f('ck_runs_trigger'), 'runs', type_='check')
    op.create_check_constraint(op.f('ck_runs_trigger'), 'runs', "trigger IN ('schedule', 'api', 'cli', 'reprocess')")
