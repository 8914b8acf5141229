"""Live progress of a source's read: units done and total (bytes, pages or records), from where the read began.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 22:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('run_sources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('progress_unit', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('progress_start', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('progress_done', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('progress_total', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('run_sources', schema=None) as batch_op:
        batch_op.drop_column('progress_total')
        batch_op.drop_column('progress_done')
        batch_op.drop_column('progress_start')
        batch_op.drop_column('progress_unit')
