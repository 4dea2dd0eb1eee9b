"""Make the broker's terminal accounts match the terminal table.

:class:`Reconciler` holds one admin session (:class:`cloud.broker.control.DynsecControl`)
and two loops in one:

- **poll** (every ``poll_s``, 1 s): read the wanted accounts
  (:func:`cloud.brokersync.wanted.wanted_accounts`) and apply what changed
  since the last poll: create, new password, enable, disable, delete. A
  change made in the web site or the API reaches the broker within
  ``poll_s`` plus one round trip. The plugin disconnects a client whose
  password changes or which is disabled or deleted, so a session opened
  with a rotated password ends with the rotation.
- **full** (at start, after every reconnect, every ``full_s``): list the
  broker's clients and compare them with the table, so a broker replaced
  with an empty state (or restored from an old copy: the password
  fingerprints differ) is refilled, and accounts the table no longer has
  are deleted. Only clients with a ``terminal:`` role are the reconciler's;
  others (the admin) are left alone.

Creating an account or setting a password needs the plaintext, which only
the sealed copy holds (:mod:`cloud.broker.sealing`); a terminal without one
(provisioned before sealing was configured) is reported and skipped until
it is provisioned again (rotated). The database is only read.

Failure modes: the broker unreachable or silent raises
:class:`~cloud.broker.control.ControlError` out of :meth:`sync_once`;
:meth:`run` then reconnects with backoff and starts with a full pass. A
command the plugin refuses is logged and retried at the next full pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from cloud.broker import dynsec
from cloud.broker.control import ControlError, DynsecControl
from cloud.broker.errors import BrokerConfigError
from cloud.broker.sealing import unseal
from cloud.brokersync.wanted import Wanted, wanted_accounts
from cloud.errors import DatabaseError
from cloud.models import utcnow

log = logging.getLogger(__name__)


@dataclass
class SyncCounts:
    """What one pass did (and the running totals in :attr:`Reconciler.totals`)."""

    created: int = 0
    passwords: int = 0
    enabled: int = 0
    disabled: int = 0
    deleted: int = 0
    failed: int = 0
    unsealable: int = 0

    def add(self, other: SyncCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def changes(self) -> int:
        return self.created + self.passwords + self.enabled + self.disabled + self.deleted


@dataclass
class ReconcilerOptions:
    poll_s: float = 1.0
    full_s: float = 300.0
    retry_max_s: float = 30.0


@dataclass
class _Actual:
    """A client as the broker reports it."""

    fingerprint: str
    enabled: bool


@dataclass
class Reconciler:
    """Keeps one broker's terminal accounts equal to the terminal table.

    ``connect`` opens an admin session; ``private_key`` opens sealed
    passwords; ``clock`` gives aware UTC now (contract ends depend on it).
    """

    sessions: sessionmaker[Session]
    connect: Callable[[], DynsecControl]
    private_key: str | None
    options: ReconcilerOptions = field(default_factory=ReconcilerOptions)
    clock: Callable[[], datetime] = utcnow
    totals: SyncCounts = field(default_factory=SyncCounts)
    stop_event: threading.Event = field(default_factory=threading.Event)
    _control: DynsecControl | None = None
    _applied: dict[str, Wanted] = field(default_factory=dict)
    _next_full: float = 0.0

    # -- one pass ----------------------------------------------------------------

    def sync_once(self, full: bool = False) -> SyncCounts:
        """One poll (or a full pass when ``full``, due, or after a reconnect)."""
        control = self._session()
        with self.sessions() as session:
            wanted = wanted_accounts(session, self.clock())
        counts = SyncCounts()
        try:
            if full or time.monotonic() >= self._next_full:
                self._full(control, wanted, counts)
                self._next_full = time.monotonic() + self.options.full_s
            else:
                self._poll(control, wanted, counts)
        finally:
            # What a pass changed counts even when the broker went away
            # half-way: the next pass sees those accounts and does not
            # create them again.
            self.totals.add(counts)
        if counts.changes or counts.failed or counts.unsealable:
            log.info("broker accounts: %s", counts)
        return counts

    def _poll(self, control: DynsecControl, wanted: dict[str, Wanted], counts: SyncCounts) -> None:
        for tid, want in wanted.items():
            have = self._applied.get(tid)
            if have is None:
                self._create(control, want, counts)
            elif not want.same_as(have):
                self._update(control, want, _Actual(have.fingerprint, have.enabled), counts)
        for tid in [t for t in self._applied if t not in wanted]:
            self._delete(control, tid, counts)

    def _full(self, control: DynsecControl, wanted: dict[str, Wanted], counts: SyncCounts) -> None:
        actual: dict[str, _Actual] = {}
        for client in control.list_clients():
            roles = [r.get("rolename", "") for r in client.get("roles", [])]
            if any(r.startswith(dynsec.TERMINAL_ROLE_PREFIX) for r in roles):
                actual[client["username"]] = _Actual(
                    client.get("textdescription", ""), not client.get("disabled", False)
                )
        self._applied = {}
        for tid, want in wanted.items():
            have = actual.get(tid)
            if have is None:
                self._create(control, want, counts)
            else:
                self._applied[tid] = Wanted(tid, have.fingerprint, have.enabled, want.sealed)
                if not want.same_as(self._applied[tid]):
                    self._update(control, want, have, counts)
        for tid in [t for t in actual if t not in wanted]:
            self._applied[tid] = Wanted(tid, "", False, None)
            self._delete(control, tid, counts)

    # -- changes -----------------------------------------------------------------

    def _create(self, control: DynsecControl, want: Wanted, counts: SyncCounts) -> None:
        password = self._password(want, counts)
        if password is None:
            return
        commands = dynsec.create_terminal(want.tid, password, want.fingerprint)
        if not want.enabled:
            # Same control message: the broker runs its commands in one go,
            # so a disabled terminal never gets a moment to log in.
            commands += dynsec.set_enabled(want.tid, False)
        answers = control.execute(commands)
        # A role left over from a half-done earlier attempt is fine.
        errors = [a for a in answers if a.error and a.error != "Role already exists"]
        if errors:
            self._failed(want.tid, "create", errors, counts)
            return
        counts.created += 1
        counts.disabled += not want.enabled
        self._applied[want.tid] = want

    def _update(
        self, control: DynsecControl, want: Wanted, have: _Actual, counts: SyncCounts
    ) -> None:
        commands: list[dict[str, Any]] = []
        if want.fingerprint != have.fingerprint:
            password = self._password(want, counts)
            if password is None:
                return
            commands += dynsec.set_password(want.tid, password, want.fingerprint)
        if want.enabled != have.enabled:
            commands += dynsec.set_enabled(want.tid, want.enabled)
        errors = [a for a in control.execute(commands) if a.error]
        if errors:
            self._failed(want.tid, "update", errors, counts)
            return
        counts.passwords += want.fingerprint != have.fingerprint
        if want.enabled != have.enabled:
            if want.enabled:
                counts.enabled += 1
            else:
                counts.disabled += 1
        self._applied[want.tid] = want

    def _delete(self, control: DynsecControl, tid: str, counts: SyncCounts) -> None:
        answers = control.execute(dynsec.delete_terminal(tid))
        errors = [a for a in answers if a.error and "not found" not in a.error]
        if errors:
            self._failed(tid, "delete", errors, counts)
            return
        counts.deleted += 1
        self._applied.pop(tid, None)

    def _password(self, want: Wanted, counts: SyncCounts) -> str | None:
        if want.sealed is None or self.private_key is None:
            counts.unsealable += 1
            log.error(
                "terminal %s: no sealed password to give the broker; provision it again (rotate)",
                want.tid,
            )
            return None
        try:
            return unseal(self.private_key, want.sealed)
        except BrokerConfigError as err:
            counts.unsealable += 1
            log.error("terminal %s: %s; provision it again (rotate)", want.tid, err)
            return None

    @staticmethod
    def _failed(tid: str, what: str, errors: list[Any], counts: SyncCounts) -> None:
        counts.failed += 1
        log.error("terminal %s: %s refused by the broker: %s", tid, what, errors)

    # -- session and loop ----------------------------------------------------------

    def _session(self) -> DynsecControl:
        if self._control is None or not self._control.alive:
            if self._control is not None:
                self._control.close()
            self._control = self.connect()
            self._next_full = 0.0  # whatever happened meanwhile: compare everything
        return self._control

    def run(self) -> None:
        """Poll until :meth:`stop`; reconnect with backoff when the broker is away."""
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                self.sync_once()
                delay = 1.0
                wait = self.options.poll_s
            except ControlError as err:
                log.warning(
                    "broker not reachable for account sync (retry in %.0f s): %s", delay, err
                )
                self.close()
                wait, delay = delay, min(delay * 2, self.options.retry_max_s)
            except (sa.exc.OperationalError, sa.exc.InterfaceError, DatabaseError) as err:
                log.warning(
                    "database not reachable for account sync (retry in %.0f s): %s", delay, err
                )
                wait, delay = delay, min(delay * 2, self.options.retry_max_s)
            self.stop_event.wait(wait)
        self.close()

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
