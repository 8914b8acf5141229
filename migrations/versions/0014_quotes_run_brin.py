"""market_quotes: the run's quotes found through a BRIN index on run_id instead of a B-tree on (run_id, id).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27 05:30:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    # Only the quality rules look quotes up by run, once per source run. A run's rows are appended
    # together (new rows and new row versions go to the end of the heap), so a BRIN index over block
    # ranges finds them; it costs next to nothing per inserted row, where the B-tree cost about 0.8 of
    # the insert's 10 µs per row. New ranges are summarized by the quality rules when a run closes (after a run
    # large enough to be analyzed instead, at the next one) and by autovacuum.
    op.drop_index('ix_market_quotes_run_id_id', table_name='market_quotes')
    op.execute("CREATE INDEX ix_market_quotes_run_id_brin ON market_quotes USING brin (run_id)"
               " WITH (pages_per_range = 32, autosummarize = on)")


def downgrade():
    op.execute('DROP INDEX ix_market_quotes_run_id_brin')
    op.create_index('ix_market_quotes_run_id_id', 'market_quotes', ['run_id', 'id'], unique=False)
