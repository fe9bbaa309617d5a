"""Alembic environment: runs on the connection that `lastedocation.db.migrate` passes."""

from alembic import context

from lastedocation.auth.models import User  # noqa: F401  (registers the tables)
from lastedocation.datasets.models import Dataset  # noqa: F401
from lastedocation.db import Base
from lastedocation.models.entries import ModelEntry  # noqa: F401
from lastedocation.runs.models import Run  # noqa: F401

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
