"""id_space_slugs: the slug the first source of an id space decided for a coin id, which every later source of
that id space (CoinPaprika ids in a JSON drop, CoinGecko ids in an NDJSON feed) then follows.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 06:30:00

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'id_space_slugs',
        sa.Column('id_space', sa.String(length=100), nullable=False),
        sa.Column('source_asset_id', sa.String(length=200), nullable=False),
        sa.Column('slug', sa.String(length=120), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.PrimaryKeyConstraint('id_space', 'source_asset_id', name=op.f('pk_id_space_slugs')),
    )
    # The ids already decided keep their decision: the oldest alias of each id in each id space.
    op.execute(
        """
        INSERT INTO id_space_slugs (id_space, source_asset_id, slug)
        SELECT DISTINCT ON (space, a.source_asset_id) space, a.source_asset_id, s.slug
        FROM (SELECT *, CASE WHEN source IN ('coingecko', 'coinpaprika') THEN source END AS space
              FROM asset_aliases) a JOIN assets s ON s.id = a.asset_id
        WHERE space IS NOT NULL AND a.match_method <> 'override'
        ORDER BY space, a.source_asset_id, a.created_at, a.id
        """
    )


def downgrade():
    op.drop_table('id_space_slugs')
