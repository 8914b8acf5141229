"""Idempotency keys in a table of their own, so a key answered with a reused run is remembered too.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 02:10:19.020787

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('idempotency_keys',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_idempotency_keys_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_idempotency_keys'))
    )
    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idempotency_keys_run_id'), ['run_id'], unique=False)

    # Keys already given keep answering with their runs.
    op.execute("INSERT INTO idempotency_keys (key, run_id, created_at)"
               " SELECT idempotency_key, id, created_at FROM runs WHERE idempotency_key IS NOT NULL")

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_runs_idempotency_key'), type_='unique')
        batch_op.drop_column('idempotency_key')


def downgrade():
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.VARCHAR(length=200), autoincrement=False, nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_runs_idempotency_key'), ['idempotency_key'])

    # The old column holds one key per run: keep each run's first.
    op.execute("UPDATE runs SET idempotency_key = k.key FROM (SELECT DISTINCT ON (run_id) run_id, key"
               " FROM idempotency_keys ORDER BY run_id, created_at) AS k WHERE runs.id = k.run_id")

    with op.batch_alter_table('idempotency_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idempotency_keys_run_id'))

    op.drop_table('idempotency_keys')
