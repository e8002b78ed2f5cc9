"""trust: the daily loss latch, run owners, indexes for claims and unsettled orders.

- ``daily_loss_halts``: one row per account and exchange date on which the day's loss reached the
  limit (the latch survives restarts);
- ``dispatch_runs.pid``: the process that started a run (a run left ``running`` by a dead process
  is marked ``abandoned`` by the account's next run);
- ``dispatch_executions.submit_attempts``: how many times the order was sent (a re-send after an
  order was found never to have reached the broker counts);
- indexes (account_name, status) on decisions, executions and runs: the claim's "stuck claim"
  query, the unsettled-order query and the abandoned-run query read one account's few rows.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "daily_loss_halts",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("account_name", sa.String(length=50), nullable=False),
        sa.Column("trading_date", sa.Date(), nullable=False),
        sa.Column("halted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day_pnl", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("realized_pnl", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("unrealized_pnl", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("max_daily_loss", sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column("action", sa.String(length=12), nullable=False),
        sa.Column("run_id", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_daily_loss_halts")),
        sa.UniqueConstraint("account_name", "trading_date", name=op.f("uq_daily_loss_halts_account_name_trading_date")),
    )
    with op.batch_alter_table("daily_loss_halts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_daily_loss_halts_account_name"), ["account_name"], unique=False)
    with op.batch_alter_table("dispatch_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_dispatch_runs_account_name_status"), ["account_name", "status"], unique=False)
    with op.batch_alter_table("dispatch_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispatch_decisions_account_name_status"), ["account_name", "status"],
                              unique=False)
    with op.batch_alter_table("dispatch_executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submit_attempts", sa.Integer(), server_default="1", nullable=False))
        batch_op.create_index(batch_op.f("ix_dispatch_executions_account_name_status"), ["account_name", "status"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dispatch_executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatch_executions_account_name_status"))
        batch_op.drop_column("submit_attempts")
    with op.batch_alter_table("dispatch_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatch_decisions_account_name_status"))
    with op.batch_alter_table("dispatch_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatch_runs_account_name_status"))
        batch_op.drop_column("pid")
    with op.batch_alter_table("daily_loss_halts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_daily_loss_halts_account_name"))
    op.drop_table("daily_loss_halts")
