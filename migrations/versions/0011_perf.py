"""Load speed: an UNLOGGED quote_stage, and each batch's staged count to notice when a crash emptied it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 23:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    # Rows staged at transform, compared at load: PostgreSQL empties an unlogged table after a crash.
    op.add_column('raw_batches', sa.Column('staged', sa.Integer(), nullable=True))
    # Staged quotes live from a batch's transform to its load; skipping the WAL for them is safe
    # only with the staged-count check above, which sends an emptied batch back to transform.
    op.execute('ALTER TABLE quote_stage SET UNLOGGED')


def downgrade():
    op.execute('ALTER TABLE quote_stage SET LOGGED')
    op.drop_column('raw_batches', 'staged')
