"""operations: account states with who, when and why; wall-clock run durations.

- ``account_state_changes``: one row per state change (enable, disable, pause, resume, kill);
- ``trading_accounts.flatten``: a killed account also sells every position it holds;
- ``dispatch_runs.wall_secs``: how long a run took in real seconds (its ``started_at`` and
  ``finished_at`` are market time, which a paper exchange may run faster than real time).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_state_changes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("account_name", sa.String(length=50), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=False),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("flatten", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("changed_by", sa.String(length=100), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_state_changes")),
    )
    with op.batch_alter_table("account_state_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_state_changes_account_name"), ["account_name"], unique=False)
    with op.batch_alter_table("trading_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flatten", sa.Boolean(), server_default="0", nullable=False))
    with op.batch_alter_table("dispatch_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wall_secs", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatch_runs", schema=None) as batch_op:
        batch_op.drop_column("wall_secs")
    with op.batch_alter_table("trading_accounts", schema=None) as batch_op:
        batch_op.drop_column("flatten")
    with op.batch_alter_table("account_state_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_state_changes_account_name"))
    op.drop_table("account_state_changes")
