"""Declarative base, column types and helpers shared by every model.

Datetimes: every datetime column is :class:`UTCDateTime`. Python code only
ever sees timezone-aware UTC datetimes; a naive datetime is refused at bind
time, because guessing its zone is how JST/UTC nine-hour bugs are born.
PostgreSQL stores ``timestamptz``; SQLite stores the UTC wall time as text in
one fixed format, so comparisons in SQL order correctly on both.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

from cloud.errors import InvalidValue

# Named constraints, so migrations can drop and alter them by name on both
# databases (SQLite batch mode needs names to rebuild a table).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the only kind of datetime the models accept)."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` converted to UTC; raise :class:`InvalidValue` if naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValue(f"naive datetime {value.isoformat()} (give it a time zone)")
    return value.astimezone(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A datetime column that round-trips aware UTC datetimes on SQLite and PostgreSQL.

    Binding a naive datetime raises (wrapped by SQLAlchemy in a StatementError
    whose ``orig`` is :class:`InvalidValue`).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite has no zone-aware type: keep UTC wall time, drop the offset so
        # every stored string has the same shape and sorts chronologically.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def str_enum(cls: type[enum.Enum], name: str) -> sa.Enum:
    """A portable enum column: VARCHAR plus a CHECK constraint storing the
    members' *values* (not names), so the database reads like the API."""
    return sa.Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        # Room to add longer values later without widening the column.
        length=max(16, *(len(str(m.value)) for m in cls)),
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Base of every mapped class; its metadata is what Alembic compares against."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime()}
