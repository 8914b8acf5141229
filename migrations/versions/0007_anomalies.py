"""Data-quality findings (anomalies), and whether an asset is still in a source's full listing.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 20:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

RULES = "('volume', 'slow_run', 'price_jump', 'source_disagreement', 'asset_disappeared', 'asset_reappeared')"


def upgrade():
    op.create_table('anomalies',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('run_source_id', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('rule', sa.String(length=32), nullable=False),
    sa.Column('asset_id', sa.Integer(), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('observed', sa.Numeric(), nullable=True),
    sa.Column('expected', sa.Numeric(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint(f"rule IN {RULES}", name=op.f('ck_anomalies_rule')),
    sa.CheckConstraint("severity IN ('info', 'warning', 'critical')", name=op.f('ck_anomalies_severity')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_anomalies_run_id_runs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_source_id'], ['run_sources.id'],
                            name=op.f('fk_anomalies_run_source_id_run_sources'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['asset_id'], ['assets.id'], name=op.f('fk_anomalies_asset_id_assets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anomalies'))
    )
    op.create_index('ix_anomalies_run_id_id', 'anomalies', ['run_id', 'id'], unique=False)
    op.create_index('ix_anomalies_source_rule_id', 'anomalies', ['source', 'rule', 'id'], unique=False)
    op.create_index('ix_market_quotes_run_id_id', 'market_quotes', ['run_id', 'id'], unique=False)
    op.create_index('ix_run_sources_source_id', 'run_sources', ['source', 'id'], unique=False)
    op.add_column('asset_aliases', sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.add_column('asset_aliases', sa.Column('inactive_since', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    op.drop_column('asset_aliases', 'inactive_since')
    op.drop_column('asset_aliases', 'active')
    op.drop_index('ix_run_sources_source_id', table_name='run_sources')
    op.drop_index('ix_market_quotes_run_id_id', table_name='market_quotes')
    op.drop_index('ix_anomalies_source_rule_id', table_name='anomalies')
    op.drop_index('ix_anomalies_run_id_id', table_name='anomalies')
    op.drop_table('anomalies')
