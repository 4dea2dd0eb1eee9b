"""Alembic environment and revisions of the relational schema (see cloud.db.upgrade)."""
