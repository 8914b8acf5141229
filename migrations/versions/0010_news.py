"""News: items from RSS/Atom feeds, their links to canonical assets, and the staging table they load from.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 22:30:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _news_columns():
    return [
        sa.Column('source', sa.String(length=100), nullable=False),
        sa.Column('guid', sa.Text(), nullable=False),
        sa.Column('feed', sa.String(length=200), nullable=False),
        sa.Column('title', sa.Text(), nullable=False),
        sa.Column('link', sa.Text(), nullable=False),
        sa.Column('summary', sa.Text(), nullable=True),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('assets_known', sa.Integer(), server_default=sa.text('0'), nullable=False),
    ]


def upgrade():
    op.create_table('news_items',
    sa.Column('id', sa.BigInteger(), nullable=False),
    *_news_columns(),
    sa.Column('raw_record_id', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('ingested_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['raw_record_id'], ['raw_records.id'],
                            name=op.f('fk_news_items_raw_record_id_raw_records')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_news_items')),
    sa.UniqueConstraint('source', 'guid', name=op.f('uq_news_items_source_guid'))
    )
    op.create_index('ix_news_items_published_id', 'news_items', ['published_at', 'id'], unique=False)
    op.create_index('ix_news_items_feed_published_id', 'news_items', ['feed', 'published_at', 'id'], unique=False)
    op.create_table('news_asset_links',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('news_item_id', sa.BigInteger(), nullable=False),
    sa.Column('asset_id', sa.Integer(), nullable=False),
    sa.Column('matched_by', sa.String(length=16), nullable=False),
    sa.Column('matched_text', sa.Text(), nullable=False),
    sa.CheckConstraint("matched_by IN ('name', 'cashtag', 'ticker')", name=op.f('ck_news_asset_links_matched_by')),
    sa.ForeignKeyConstraint(['news_item_id'], ['news_items.id'],
                            name=op.f('fk_news_asset_links_news_item_id_news_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_news_asset_links_asset_id_assets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_news_asset_links')),
    sa.UniqueConstraint('news_item_id', 'asset_id', name=op.f('uq_news_asset_links_news_item_id_asset_id'))
    )
    op.create_index('ix_news_asset_links_asset_id_news_item_id', 'news_asset_links', ['asset_id', 'news_item_id'],
                    unique=False)
    op.create_table('news_stage',
    sa.Column('raw_record_id', sa.BigInteger(), nullable=False),
    sa.Column('batch_id', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    *_news_columns(),
    sa.Column('links', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['raw_batches.id'], name=op.f('fk_news_stage_batch_id_raw_batches'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('raw_record_id', name=op.f('pk_news_stage'))
    )
    op.create_index('ix_news_stage_batch_id', 'news_stage', ['batch_id'], unique=False)


def downgrade():
    op.drop_index('ix_news_stage_batch_id', table_name='news_stage')
    op.drop_table('news_stage')
    op.drop_index('ix_news_asset_links_asset_id_news_item_id', table_name='news_asset_links')
    op.drop_table('news_asset_links')
    op.drop_index('ix_news_items_feed_published_id', table_name='news_items')
    op.drop_index('ix_news_items_published_id', table_name='news_items')
    op.drop_table('news_items')
