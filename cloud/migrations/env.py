"""Alembic environment: runs the revisions against the database.

The URL comes from ``config.attributes["url"]`` when driven by
``cloud.db.upgrade``; from the settings (``MIMAMORI_DATABASE_URL`` or the
instance file) when run by the ``alembic`` CLI with ``cloud/alembic.ini``.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from alembic.autogenerate.api import AutogenContext

import cloud.models  # registers every table on the metadata
from cloud.config import Settings
from cloud.db import make_engine, normalize_url
from cloud.models.base import UTCDateTime

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = cloud.models.Base.metadata


def _url() -> sa.URL:
    url = config.attributes.get("url")
    return normalize_url(url if url is not None else Settings.load().database_url)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Revisions must not import model code (it changes; revisions must not),
    # so the model's UTC decorator is written as the column type it wraps.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=render_item,
        **kwargs,
    )


def run_offline() -> None:
    """``alembic upgrade --sql``: print the DDL instead of running it."""
    url = _url()
    _configure(
        url=url.render_as_string(hide_password=False),
        literal_binds=True,
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            # SQLite cannot ALTER most things; batch mode rebuilds the table.
            _configure(
                connection=connection,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
