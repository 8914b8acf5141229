"""Files' raw layer as chunks: the bytes of each batch of lines, once, with lineage (chunk, line).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 01:00:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'raw_chunks',
        sa.Column('id', sa.BigInteger(), primary_key=True),
        sa.Column('source', sa.String(100), nullable=False),
        sa.Column('run_id', sa.BigInteger(), nullable=False),
        sa.Column('file', sa.Text(), nullable=False),
        # The header line and the records exactly as read from the file, and where they lay in it.
        sa.Column('header', sa.LargeBinary(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('first_line', sa.Integer(), nullable=False),
        sa.Column('byte_start', sa.BigInteger(), nullable=False),
        sa.Column('byte_end', sa.BigInteger(), nullable=False),
        sa.Column('records', sa.Integer(), nullable=False),
        # Lines that repeat an earlier line of the chunk byte for byte: kept, but loaded once.
        sa.Column('repeats', postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column('sha256', sa.LargeBinary(), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.UniqueConstraint('source', 'sha256', name=op.f('uq_raw_chunks_source_sha256')),
    )
    # lz4 costs a third of pglz's CPU; a server built without it keeps the default.
    op.execute("""
        DO $$ BEGIN
            ALTER TABLE raw_chunks ALTER COLUMN data SET COMPRESSION lz4;
        EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN NULL;
        END $$""")
    op.add_column('raw_batches', sa.Column('chunk_id', sa.BigInteger(),
                                           sa.ForeignKey('raw_chunks.id', name=op.f('fk_raw_batches_chunk_id_raw_chunks')),
                                           nullable=True))
    op.create_index('ix_raw_batches_chunk_id', 'raw_batches', ['chunk_id'])
    # A rejected line of a chunk is kept as a raw record too (payload = its cells by column), so
    # /rejects and replay work as for any record; these say which line of which chunk it is.
    op.add_column('raw_records', sa.Column('chunk_id', sa.BigInteger(), nullable=True))
    op.add_column('raw_records', sa.Column('line', sa.Integer(), nullable=True))

    # A quote's lineage: a raw record, or a line of a raw chunk. No foreign key on the chunk: the
    # check costs a lookup per row, and chunks are never deleted (the trigger below refuses it).
    op.alter_column('market_quotes', 'raw_record_id', nullable=True)
    op.add_column('market_quotes', sa.Column('raw_chunk_id', sa.BigInteger(), nullable=True))
    op.add_column('market_quotes', sa.Column('raw_line', sa.Integer(), nullable=True))
    op.create_check_constraint(op.f('ck_market_quotes_lineage'), 'market_quotes',
                               '(raw_record_id IS NULL) <> (raw_chunk_id IS NULL AND raw_line IS NULL)')
    op.execute("""
        CREATE FUNCTION raw_chunks_keep() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM market_quotes WHERE raw_chunk_id = OLD.id) THEN
                RAISE EXCEPTION 'raw chunk % is the lineage of loaded quotes', OLD.id
                    USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN OLD;
        END $$""")
    op.execute("CREATE TRIGGER raw_chunks_keep BEFORE DELETE ON raw_chunks FOR EACH ROW EXECUTE FUNCTION raw_chunks_keep()")

    # The foreign key from quotes to assets costs a `SELECT ... FOR KEY SHARE` of the asset per written
    # row (8.5-9 s per million rows, bench/README.md). A quote's asset id is always read from its
    # alias, whose own foreign key holds it to a real asset; what the quotes' key still guarded, an
    # asset deleted from under its quotes, this trigger refuses (assets are never deleted by the product).
    op.drop_constraint(op.f('fk_market_quotes_asset_id_assets'), 'market_quotes', type_='foreignkey')
    op.execute("""
        CREATE FUNCTION assets_keep() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM market_quotes WHERE asset_id = OLD.id) THEN
                RAISE EXCEPTION 'asset % has quotes', OLD.id USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN OLD;
        END $$""")
    op.execute('CREATE TRIGGER assets_keep BEFORE DELETE ON assets FOR EACH ROW EXECUTE FUNCTION assets_keep()')

    op.execute('ALTER TABLE quote_stage DROP CONSTRAINT pk_quote_stage')
    # Its foreign key to the batch cost a key-share lock of the batch row per staged quote (about as
    # much as writing the row). Staged rows live from a batch's transform to its load, which deletes
    # them; the batch row is never deleted while they do (a run is discarded only before dispatch).
    op.drop_constraint(op.f('fk_quote_stage_batch_id_raw_batches'), 'quote_stage', type_='foreignkey')
    op.alter_column('quote_stage', 'raw_record_id', nullable=True)
    # It was a bigserial primary key; a chunk's quote has no raw record, so no default either.
    op.execute('ALTER TABLE quote_stage ALTER COLUMN raw_record_id DROP DEFAULT')
    op.execute('DROP SEQUENCE IF EXISTS quote_stage_raw_record_id_seq')
    # Partial: a chunk's quotes (no raw record) cost this index nothing.
    op.create_index('ux_quote_stage_raw_record_id', 'quote_stage', ['raw_record_id'], unique=True,
                    postgresql_where=sa.text('raw_record_id IS NOT NULL'))
    op.add_column('quote_stage', sa.Column('raw_chunk_id', sa.BigInteger(), nullable=True))
    op.add_column('quote_stage', sa.Column('raw_line', sa.Integer(), nullable=True))


def downgrade():
    op.execute('DELETE FROM quote_stage WHERE raw_record_id IS NULL')
    op.drop_column('quote_stage', 'raw_line')
    op.drop_column('quote_stage', 'raw_chunk_id')
    op.drop_index('ux_quote_stage_raw_record_id', table_name='quote_stage')
    op.alter_column('quote_stage', 'raw_record_id', nullable=False)
    op.create_primary_key('pk_quote_stage', 'quote_stage', ['raw_record_id'])
    op.create_foreign_key(op.f('fk_quote_stage_batch_id_raw_batches'), 'quote_stage', 'raw_batches', ['batch_id'],
                          ['id'], ondelete='CASCADE')
    op.execute('DROP TRIGGER assets_keep ON assets')
    op.execute('DROP FUNCTION assets_keep()')
    op.create_foreign_key(op.f('fk_market_quotes_asset_id_assets'), 'market_quotes', 'assets', ['asset_id'], ['id'])
    op.execute('DROP TRIGGER raw_chunks_keep ON raw_chunks')
    op.execute('DROP FUNCTION raw_chunks_keep()')
    op.drop_constraint(op.f('ck_market_quotes_lineage'), 'market_quotes')
    op.execute('DELETE FROM market_quotes WHERE raw_record_id IS NULL')
    op.drop_column('market_quotes', 'raw_line')
    op.drop_column('market_quotes', 'raw_chunk_id')
    op.alter_column('market_quotes', 'raw_record_id', nullable=False)
    op.drop_column('raw_records', 'line')
    op.drop_column('raw_records', 'chunk_id')
    op.drop_index('ix_raw_batches_chunk_id', table_name='raw_batches')
    op.drop_column('raw_batches', 'chunk_id')
    op.drop_table('raw_chunks')
