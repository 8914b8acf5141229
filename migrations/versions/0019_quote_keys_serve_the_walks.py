"""market_quotes: the keys lead with what the walks order by, and the two indexes that only repeated them go.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-08 10:00:00

Every row a load writes goes into each of the table's B-trees. Two of the four only served orders a key can
serve as well once its columns are in the walk's order:
- the primary key becomes (observed_at, id), so it is the /data walk's index and `ix_market_quotes_observed_id`
  goes (nothing looks a quote up by its id alone);
- the natural key becomes (asset_id, observed_at, source), so a walk of one asset reads it in observed_at
  order (ties, one per source at most, are put in id order by an incremental sort) and
  `ix_market_quotes_asset_observed_id` goes. ON CONFLICT names the key's columns, in any order.
Inserting 500,000 rows as a load does cost 5.8 -> 3.6 us of PostgreSQL's CPU per row (system PostgreSQL 15,
2 cores). Both keys are rebuilt on every partition: on a large table the upgrade takes as long as building two
indexes on it, under a lock that stops loads and reads.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("ALTER TABLE market_quotes DROP CONSTRAINT pk_market_quotes")
    op.execute("ALTER TABLE market_quotes ADD CONSTRAINT pk_market_quotes PRIMARY KEY (observed_at, id)")
    op.execute("DROP INDEX ix_market_quotes_observed_id")
    op.execute("ALTER TABLE market_quotes DROP CONSTRAINT uq_market_quotes_source_asset_id_observed_at")
    op.execute("ALTER TABLE market_quotes ADD CONSTRAINT uq_market_quotes_asset_id_observed_at_source"
               " UNIQUE (asset_id, observed_at, source)")
    op.execute("DROP INDEX ix_market_quotes_asset_observed_id")


def downgrade():
    op.execute("CREATE INDEX ix_market_quotes_asset_observed_id ON market_quotes (asset_id, observed_at, id)")
    op.execute("ALTER TABLE market_quotes DROP CONSTRAINT uq_market_quotes_asset_id_observed_at_source")
    op.execute("ALTER TABLE market_quotes ADD CONSTRAINT uq_market_quotes_source_asset_id_observed_at"
               " UNIQUE (source, asset_id, observed_at)")
    op.execute("CREATE INDEX ix_market_quotes_observed_id ON market_quotes (observed_at, id)")
    op.execute("ALTER TABLE market_quotes DROP CONSTRAINT pk_market_quotes")
    op.execute("ALTER TABLE market_quotes ADD CONSTRAINT pk_market_quotes PRIMARY KEY (id, observed_at)")
