"""market_quotes: partitioned by month of observed_at (UTC), with a DEFAULT partition, so old months can be dropped whole.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 13:00:00

The rows are copied into the new table with their ids; the id sequence stays the same one. The primary key
becomes (id, observed_at): a partitioned table's unique keys must hold its partition key. The unique key
(source, asset_id, observed_at) already does, so the upsert's ON CONFLICT target is unchanged.
Partitions are made for the current month and MONTHS_AHEAD after it; beat's daily `maintain_partitions`
keeps making them ahead (kasparro/pipeline/partitions.py). A row of a month without its partition lands in
the DEFAULT one instead of failing. The rows of earlier months stay there too, as history does later
(QUOTES_PARTITION_HISTORY moves them to months of their own): a partition per past month made loads and
/data/latest slower, 2.95-4.49x and 182-212 ms at 124 months against 1.00-1.17x and 10.5-12.4 ms.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3
# The indexes whose names the new table takes over; the table being replaced gives them up first.
INDEXES = ('ix_market_quotes_observed_id', 'ix_market_quotes_asset_observed_id', 'ix_market_quotes_run_id_brin')
KEYS = ('pk_market_quotes', 'uq_market_quotes_source_asset_id_observed_at')


def upgrade():
    _rename_away('market_quotes_plain')
    # LIKE keeps the columns in their order (so SELECT * copies), their defaults (the same id sequence) and
    # the checks; keys, indexes and the foreign key are made after the copy, which is faster than along it.
    op.execute("CREATE TABLE market_quotes (LIKE market_quotes_plain INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
               " PARTITION BY RANGE (observed_at)")
    op.execute(
        f"""
        DO $$
        DECLARE month timestamptz;
        BEGIN
          FOR month IN
            SELECT date_trunc('month', now(), 'UTC') + make_interval(months => n)
            FROM generate_series(0, {MONTHS_AHEAD}) AS n
          LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF market_quotes FOR VALUES FROM (%L) TO (%L)',
                           'market_quotes_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM'), month,
                           (month AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC');
          END LOOP;
        END $$
        """
    )
    op.execute("CREATE TABLE market_quotes_default PARTITION OF market_quotes DEFAULT")
    op.execute("INSERT INTO market_quotes SELECT * FROM market_quotes_plain")
    op.execute("ALTER SEQUENCE market_quotes_id_seq OWNED BY market_quotes.id")
    op.execute("DROP TABLE market_quotes_plain")
    op.execute("ALTER TABLE market_quotes ADD CONSTRAINT pk_market_quotes PRIMARY KEY (id, observed_at)")
    _add_shared_keys()
    # Autovacuum analyzes partitions, never a partitioned parent: the planner's whole-table figures come
    # only from an ANALYZE of the parent (the quality rules run one after a large load).
    op.execute("ANALYZE market_quotes")


def downgrade():
    _rename_away('market_quotes_partitioned')
    op.execute("CREATE TABLE market_quotes (LIKE market_quotes_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    op.execute("INSERT INTO market_quotes SELECT * FROM market_quotes_partitioned")
    op.execute("ALTER SEQUENCE market_quotes_id_seq OWNED BY market_quotes.id")
    op.execute("DROP TABLE market_quotes_partitioned")  # and its partitions
    op.execute("ALTER TABLE market_quotes ADD CONSTRAINT pk_market_quotes PRIMARY KEY (id)")
    _add_shared_keys()
    op.execute("ANALYZE market_quotes")


def _rename_away(name: str) -> None:
    """Rename the current table and its named keys and indexes, so the new table can take the names."""
    op.execute(f"ALTER TABLE market_quotes RENAME TO {name}")
    for key in KEYS:  # the key's index is renamed with it
        op.execute(f"ALTER TABLE {name} RENAME CONSTRAINT {key} TO {key}_old")
    for index in INDEXES:
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_old")


def _add_shared_keys() -> None:
    """Add what both shapes of the table have: the natural key, the lineage foreign key and the indexes."""
    op.execute("ALTER TABLE market_quotes ADD CONSTRAINT uq_market_quotes_source_asset_id_observed_at"
               " UNIQUE (source, asset_id, observed_at)")
    op.execute("ALTER TABLE market_quotes ADD CONSTRAINT fk_market_quotes_raw_record_id_raw_records"
               " FOREIGN KEY (raw_record_id) REFERENCES raw_records (id)")
    op.execute("CREATE INDEX ix_market_quotes_observed_id ON market_quotes (observed_at, id)")
    op.execute("CREATE INDEX ix_market_quotes_asset_observed_id ON market_quotes (asset_id, observed_at, id)")
    op.execute("CREATE INDEX ix_market_quotes_run_id_brin ON market_quotes USING brin (run_id)"
               " WITH (pages_per_range = 32, autosummarize = on)")
