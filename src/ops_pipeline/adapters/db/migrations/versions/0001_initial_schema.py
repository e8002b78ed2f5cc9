"""initial schema: the seeds' tables plus decisions, runs, outcomes, equity and config history.

On PostgreSQL the database's TimeZone is set to America/New_York, so the seeds' SQL
(``simulated_ts::date = CURRENT_DATE``) reads US trading days from the UTC-stored ``timestamptz``.

Revision ID: 0001
Revises: 
Create Date: 2026-11-21 11:04:18.060477
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('account_equity_snapshots',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_name', sa.String(length=50), nullable=False),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('equity', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('cash', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('buying_power', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('open_positions', sa.Integer(), nullable=False),
    sa.Column('open_exposure', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('unrealized_pnl', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('realized_pnl_today', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_equity_snapshots')),
    sa.UniqueConstraint('account_name', 'taken_at', name=op.f('uq_account_equity_snapshots_account_name_taken_at'))
    )
    with op.batch_alter_table('account_equity_snapshots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_equity_snapshots_account_name'), ['account_name'], unique=False)

    op.create_table('account_metadata',
    sa.Column('account_name', sa.String(length=50), nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('initial_balance', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('account_name', name=op.f('pk_account_metadata'))
    )
    op.create_table('config_versions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('account_name', sa.String(length=50), nullable=True),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('accepted', sa.Boolean(), nullable=False),
    sa.Column('diff', sa.JSON(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_config_versions'))
    )
    with op.batch_alter_table('config_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_config_versions_account_name'), ['account_name'], unique=False)

    op.create_table('dispatch_runs',
    sa.Column('run_id', sa.String(length=100), nullable=False),
    sa.Column('account_name', sa.String(length=50), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_dispatch_runs'))
    )
    with op.batch_alter_table('dispatch_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dispatch_runs_account_name'), ['account_name'], unique=False)

    op.create_table('recommendations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=40), nullable=False),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('strategy_type', sa.String(length=16), nullable=False),
    sa.Column('confidence', sa.Numeric(precision=6, scale=4), nullable=False),
    sa.Column('volume_ratio', sa.Numeric(precision=10, scale=4), nullable=False),
    sa.Column('underlying_price', sa.Numeric(precision=12, scale=4), nullable=True),
    sa.Column('bar_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('feature_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('features', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recommendations')),
    sa.UniqueConstraint('source', 'ticker', 'bar_ts', 'action', name=op.f('uq_recommendations_source_ticker_bar_ts_action'))
    )
    with op.batch_alter_table('recommendations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recommendations_created_at'), ['created_at'], unique=False)

    op.create_table('trading_accounts',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_name', sa.String(length=50), nullable=False),
    sa.Column('tier', sa.String(length=20), nullable=False),
    sa.Column('alpaca_account_id', sa.String(length=100), nullable=True),
    sa.Column('secret_name', sa.String(length=100), server_default='', nullable=False),
    sa.Column('initial_balance', sa.Numeric(precision=12, scale=2), nullable=False),
    sa.Column('current_balance', sa.Numeric(precision=12, scale=2), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default='1', nullable=False),
    sa.Column('state', sa.String(length=20), server_default='enabled', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_trade_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_trading_accounts')),
    sa.UniqueConstraint('account_name', name=op.f('uq_trading_accounts_account_name'))
    )
    op.create_table('dispatch_decisions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('recommendation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_name', sa.String(length=50), nullable=False),
    sa.Column('run_id', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('reason_code', sa.String(length=40), nullable=True),
    sa.Column('reason_detail', sa.Text(), nullable=True),
    sa.Column('option_symbol', sa.String(length=32), nullable=True),
    sa.Column('quality_score', sa.Numeric(precision=6, scale=2), nullable=True),
    sa.Column('contracts', sa.Integer(), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['recommendation_id'], ['recommendations.id'], name=op.f('fk_dispatch_decisions_recommendation_id_recommendations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispatch_decisions')),
    sa.UniqueConstraint('recommendation_id', 'account_name', name=op.f('uq_dispatch_decisions_recommendation_id_account_name'))
    )
    with op.batch_alter_table('dispatch_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dispatch_decisions_account_name'), ['account_name'], unique=False)

    op.create_table('dispatch_executions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=100), nullable=False),
    sa.Column('recommendation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('account_name', sa.String(length=50), nullable=False),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('strategy_type', sa.String(length=16), nullable=False),
    sa.Column('option_symbol', sa.String(length=32), nullable=False),
    sa.Column('contracts', sa.Integer(), nullable=False),
    sa.Column('premium', sa.Numeric(precision=12, scale=4), nullable=False),
    sa.Column('notional', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('client_order_id', sa.String(length=128), nullable=False),
    sa.Column('broker_order_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('simulated_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('execution_mode', sa.String(length=16), nullable=False),
    sa.Column('quality_score', sa.Numeric(precision=6, scale=2), nullable=True),
    sa.Column('confidence', sa.Numeric(precision=6, scale=4), nullable=True),
    sa.Column('quote_source', sa.String(length=12), nullable=True),
    sa.Column('quote_ts', sa.DateTime(timezone=True), nullable=True),
    sa.Column('quote_age_secs', sa.Numeric(precision=10, scale=1), nullable=True),
    sa.Column('quote_snapshot', sa.String(length=64), nullable=True),
    sa.Column('filled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['recommendation_id'], ['recommendations.id'], name=op.f('fk_dispatch_executions_recommendation_id_recommendations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispatch_executions')),
    sa.UniqueConstraint('client_order_id', name=op.f('uq_dispatch_executions_client_order_id'))
    )
    with op.batch_alter_table('dispatch_executions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dispatch_executions_account_name_simulated_ts'), ['account_name', 'simulated_ts'], unique=False)

    op.create_table('active_positions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_name', sa.String(length=50), nullable=False),
    sa.Column('execution_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('option_symbol', sa.String(length=32), nullable=False),
    sa.Column('strategy_type', sa.String(length=16), nullable=False),
    sa.Column('contracts', sa.Integer(), nullable=False),
    sa.Column('entry_price', sa.Numeric(precision=12, scale=4), nullable=False),
    sa.Column('notional_value', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('stop_price', sa.Numeric(precision=12, scale=4), nullable=False),
    sa.Column('target_price', sa.Numeric(precision=12, scale=4), nullable=False),
    sa.Column('expiration_date', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('exit_price', sa.Numeric(precision=12, scale=4), nullable=True),
    sa.Column('exit_reason', sa.String(length=24), nullable=True),
    sa.Column('exit_quote_source', sa.String(length=12), nullable=True),
    sa.Column('realized_pnl', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('current_price', sa.Numeric(precision=12, scale=4), nullable=True),
    sa.Column('unrealized_pnl', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('marked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('close_attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('close_client_order_id', sa.String(length=128), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('flags', sa.String(length=200), nullable=True),
    sa.Column('quality_score', sa.Numeric(precision=6, scale=2), nullable=True),
    sa.Column('confidence', sa.Numeric(precision=6, scale=4), nullable=True),
    sa.ForeignKeyConstraint(['execution_id'], ['dispatch_executions.id'], name=op.f('fk_active_positions_execution_id_dispatch_executions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_active_positions')),
    sa.UniqueConstraint('execution_id', name=op.f('uq_active_positions_execution_id'))
    )
    with op.batch_alter_table('active_positions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_active_positions_account_name'), ['account_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_active_positions_account_name_status'), ['account_name', 'status'], unique=False)

    op.create_table('ai_option_trades',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_name', sa.String(length=50), nullable=False),
    sa.Column('position_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('ticker', sa.String(length=16), nullable=False),
    sa.Column('option_symbol', sa.String(length=32), nullable=False),
    sa.Column('strategy_type', sa.String(length=16), nullable=False),
    sa.Column('quality_score', sa.Numeric(precision=6, scale=2), nullable=True),
    sa.Column('confidence', sa.Numeric(precision=6, scale=4), nullable=True),
    sa.Column('contracts', sa.Integer(), nullable=False),
    sa.Column('entry_price', sa.Numeric(precision=12, scale=4), nullable=False),
    sa.Column('exit_price', sa.Numeric(precision=12, scale=4), nullable=True),
    sa.Column('realized_pnl', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('pnl_pct', sa.Numeric(precision=10, scale=4), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('hold_minutes', sa.Numeric(precision=10, scale=1), nullable=True),
    sa.Column('exit_reason', sa.String(length=24), nullable=False),
    sa.ForeignKeyConstraint(['position_id'], ['active_positions.id'], name=op.f('fk_ai_option_trades_position_id_active_positions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ai_option_trades')),
    sa.UniqueConstraint('position_id', name=op.f('uq_ai_option_trades_position_id'))
    )
    with op.batch_alter_table('ai_option_trades', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ai_option_trades_account_name'), ['account_name'], unique=False)



    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone TO %L', "
            "current_database(), 'America/New_York'); END $$;"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET timezone', current_database()); END $$;")
    with op.batch_alter_table('ai_option_trades', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ai_option_trades_account_name'))

    op.drop_table('ai_option_trades')
    with op.batch_alter_table('active_positions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_active_positions_account_name_status'))
        batch_op.drop_index(batch_op.f('ix_active_positions_account_name'))

    op.drop_table('active_positions')
    with op.batch_alter_table('dispatch_executions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dispatch_executions_account_name_simulated_ts'))

    op.drop_table('dispatch_executions')
    with op.batch_alter_table('dispatch_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dispatch_decisions_account_name'))

    op.drop_table('dispatch_decisions')
    op.drop_table('trading_accounts')
    with op.batch_alter_table('recommendations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recommendations_created_at'))

    op.drop_table('recommendations')
    with op.batch_alter_table('dispatch_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dispatch_runs_account_name'))

    op.drop_table('dispatch_runs')
    with op.batch_alter_table('config_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_config_versions_account_name'))

    op.drop_table('config_versions')
    op.drop_table('account_metadata')
    with op.batch_alter_table('account_equity_snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_account_equity_snapshots_account_name'))

    op.drop_table('account_equity_snapshots')
