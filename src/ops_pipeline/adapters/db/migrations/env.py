"""Alembic environment: the engine comes from ``Database`` (``config.attributes["engine"]``) or,
from the ``alembic`` command line, from ``OPS_PIPELINE_DATABASE_URL`` (default: the local SQLite
file)."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from ops_pipeline.adapters.db.database import normalize_url
from ops_pipeline.adapters.db.tables import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    engine = create_engine(normalize_url(os.environ.get("OPS_PIPELINE_DATABASE_URL", "sqlite:///ops_pipeline.db")))

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
