"""Alembic environment: the engine comes from ``Database`` (``config.attributes["engine"]``) or,
from the ``alembic`` command line, from ``OPS_PIPELINE_DATABASE_URL`` (default: the local SQLite
file).

Migrations run in one transaction that first takes a lock: on PostgreSQL the advisory lock
:data:`~ops_pipeline.adapters.db.database.MIGRATION_LOCK` (two first runs on a new database would
otherwise both insert into ``alembic_version``); on SQLite the transaction's ``BEGIN IMMEDIATE``
(``Database``) takes the write lock. The second migrator waits, then finds the schema at head.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, text

from ops_pipeline.adapters.db.database import MIGRATION_LOCK, normalize_url
from ops_pipeline.adapters.db.tables import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    engine = create_engine(normalize_url(os.environ.get("OPS_PIPELINE_DATABASE_URL", "sqlite:///ops_pipeline.db")))

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
