"""Alembic environment: migrations run on the connection handed over by mailgateway.store.db."""

from __future__ import annotations

from alembic import context

from mailgateway.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    msg = "run migrations with `mailgateway db upgrade`"
    raise RuntimeError(msg)

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
