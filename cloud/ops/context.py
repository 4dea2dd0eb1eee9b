"""What a job gets to work with, and how a process builds it from settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from cloud import db
from cloud.config import Settings
from cloud.ops.health import Check
from cloud.ops.settings import OpsSettings
from cloud.timeseries import TimeSeriesStore, make_store


@dataclass(frozen=True)
class Context:
    """Everything a job needs; ``now`` is when the run started (UTC)."""

    engine: Engine
    sessions: sessionmaker[Session]
    settings: Settings
    ops: OpsSettings
    store: TimeSeriesStore
    checks: Mapping[str, Check]
    now: datetime


@dataclass
class Env:
    """A process's long-lived parts; :meth:`context` makes a job's context."""

    settings: Settings
    ops: OpsSettings
    engine: Engine
    store: TimeSeriesStore
    checks: Mapping[str, Check] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sessions = db.session_factory(self.engine)

    def context(self, now: datetime) -> Context:
        return Context(
            self.engine, self.sessions, self.settings, self.ops, self.store, self.checks, now
        )


def build(
    instance_file: str | Path | None = None,
    ops_file: str | Path | None = None,
    *,
    require_current: bool = True,
    with_checks: bool = True,
) -> Env:
    """Load both settings files, open the database and the time-series store,
    and build the configured health checks.

    Raises :class:`cloud.errors.ConfigError` for bad settings and
    :class:`cloud.errors.DatabaseError` if the database is not migrated.
    """
    from cloud.ops.health import build_checks  # noqa: PLC0415

    settings = Settings.load(instance_file=instance_file)
    ops = OpsSettings.load(ops_file)
    engine = db.make_engine(settings.database_url, echo=settings.sql_echo)
    if require_current:
        db.require_current(engine)
    store = make_store(settings, engine)
    env = Env(settings, ops, engine, store)
    if with_checks:  # only what checks health needs the monitor's password
        env.checks = build_checks(settings, ops, engine, store)
    return env
