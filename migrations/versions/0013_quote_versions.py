"""Quotes remember the raw batch that wrote them, so one run's batches may load in any order.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 05:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    # No foreign key and no index: the upsert compares it with the incoming row's (a later batch of the
    # same run wins), which costs nothing per row beyond the column. Older rows keep NULL.
    op.add_column('market_quotes', sa.Column('batch_id', sa.BigInteger(), nullable=True))


def downgrade():
    op.drop_column('market_quotes', 'batch_id')
