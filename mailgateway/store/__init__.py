"""Persistence: SQLAlchemy schema, engine set-up, queries and migrations."""
