"""run_events: kind `quality`, a data-quality rule that failed (a timeout, a bug) and so checked nothing.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 01:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

OLD = "kind IN ('retry', 'busy', 'interrupted', 'resumed', 'failed', 'fault')"
NEW = "kind IN ('retry', 'busy', 'interrupted', 'resumed', 'failed', 'fault', 'quality')"


def upgrade():
    op.drop_constraint(op.f('ck_run_events_kind'), 'run_events', type_='check')
    op.create_check_constraint(op.f('ck_run_events_kind'), 'run_events', NEW)


def downgrade():
    op.execute("DELETE FROM run_events WHERE kind = 'quality'")
    op.drop_constraint(op.f('ck_run_events_kind'), 'run_events', type_='check')
    op.create_check_constraint(op.f('ck_run_events_kind'), 'run_events', OLD)
