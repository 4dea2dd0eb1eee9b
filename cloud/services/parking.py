"""The parking store: frames the cloud keeps, acknowledged, but has not applied.

Rule (the ingest's durability rule, extended): a frame the cloud
acknowledges is a frame the terminal deletes, so a frame is refused for
good only when it can never be valid (malformed, another terminal's).
Every other refusal parks it here first:

- ``not_contracted``: a registered terminal outside its contract (not
  started, ended, no customer, customer inactive) or not active
  (suspended, decommissioned). Waits for an operator: release (apply it
  now, as of when it arrived) or discard.
- ``no_birth``: a data frame whose boot's birth the cloud does not have.
  The ingest asks the terminal for a rebirth; when a birth of that boot is
  stored, its parked frames are released by the ingest itself.
- ``held_over_limit``: a data frame waiting for its birth while its
  terminal already has the most frames waiting that the ingest holds
  unacknowledged for one terminal (``--held-per-terminal``). Released like
  ``no_birth`` when the birth comes.

Store functions (:func:`park`, :func:`release_waiting_for_birth`,
:func:`take_released`, :func:`remove`) take a Session and plain values and
never commit: the caller's transaction decides, and the caller acknowledges
the frames to the terminal only after it committed. Functions for people
(:func:`summary`, :func:`request_release`, :func:`discard`) check the
viewer's role, audit and commit, like the other services.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud.errors import InvalidValue
from cloud.models import AuditEntry, ParkedFrame, Terminal
from cloud.services.errors import N_, Invalid
from cloud.services.scope import OPERATE, Viewer, get_scoped, require

NOT_CONTRACTED = "not_contracted"
NO_BIRTH = "no_birth"
HELD_OVER_LIMIT = "held_over_limit"
REASONS = (NOT_CONTRACTED, NO_BIRTH, HELD_OVER_LIMIT)
RELEASE_BATCH = 500  # frames the ingest applies per release round


@dataclass(frozen=True, slots=True)
class Parcel:
    """One frame to park: its key, where and when it came, and why.

    ``payload`` is the frame exactly as received (the ingest decodes it
    again on release); ``received_at`` is an aware datetime.
    """

    terminal_id: str
    boot: int
    seq: int
    topic: str
    payload: bytes
    received_at: datetime
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ParkedGroup:
    """Parked frames of one terminal and reason, as an operator sees them."""

    terminal_id: str
    reason: str
    count: int
    oldest: datetime
    newest: datetime
    release_requested: int  # of ``count``, waiting for the ingest to apply them


# -- the store (ingest, and bounds on top of it) ----------------------------------


def park(session: Session, parcels: Sequence[Parcel], *, at: datetime) -> int:
    """Keep ``parcels``; return how many.

    One statement. A frame parked before (same terminal, boot and seq: a
    resend whose ack was lost, or a released frame that still cannot be
    applied) keeps its row and first ``received_at`` and takes the new
    reason; a pending release request on it is cleared, so a frame that
    cannot be applied is not retried in a loop. The caller commits, and
    may acknowledge the frames to their terminal only after that commit.
    Raises :class:`InvalidValue` for an unknown reason.
    """
    if not parcels:
        return 0
    for p in parcels:
        if p.reason not in REASONS:
            raise InvalidValue(f"unknown parking reason {p.reason!r}")
    table = ParkedFrame.__table__
    insert = _insert_for(session)(table)
    stmt = insert.on_conflict_do_update(
        index_elements=["terminal_id", "boot", "seq"],
        set_={
            "reason": insert.excluded.reason,
            "detail": insert.excluded.detail,
            "release_requested_at": None,
            "release_requested_by": None,
        },
    )
    session.execute(
        stmt,
        [
            {
                "terminal_id": p.terminal_id,
                "boot": p.boot,
                "seq": p.seq,
                "topic": p.topic,
                "payload": p.payload,
                "reason": p.reason,
                "detail": p.detail[:500],
                "received_at": p.received_at,
                "parked_at": at,
                "release_requested_at": None,
                "release_requested_by": None,
            }
            for p in parcels
        ],
    )
    return len(parcels)


def release_waiting_for_birth(
    session: Session, births: Iterable[tuple[str, int]], *, at: datetime
) -> int:
    """A birth of (terminal, boot) was stored in the caller's transaction:
    mark that terminal's ``no_birth`` and ``held_over_limit`` frames of that boot or older for
    release (an older boot's data is read with the newest table recorded
    for it; a frame still without one is parked again). Returns how many
    were marked. One statement; the caller commits."""
    newest: dict[str, int] = {}
    for tid, boot in births:
        newest[tid] = max(boot, newest.get(tid, boot))
    if not newest:
        return 0
    result = session.execute(
        sa.update(ParkedFrame)
        .where(
            sa.or_(
                *(
                    sa.and_(ParkedFrame.terminal_id == tid, ParkedFrame.boot <= boot)
                    for tid, boot in sorted(newest.items())
                )
            ),
            ParkedFrame.reason.in_((NO_BIRTH, HELD_OVER_LIMIT)),
            ParkedFrame.release_requested_at.is_(None),
        )
        .values(release_requested_at=at, release_requested_by="ingest")
    )
    return int(getattr(result, "rowcount", 0) or 0)


def take_released(session: Session, limit: int = RELEASE_BATCH) -> list[ParkedFrame]:
    """Up to ``limit`` frames marked for release, in the order their terminals
    made them (terminal, boot, seq: a birth before the data it explains)."""
    return list(
        session.scalars(
            sa.select(ParkedFrame)
            .where(ParkedFrame.release_requested_at.is_not(None))
            .order_by(ParkedFrame.terminal_id, ParkedFrame.boot, ParkedFrame.seq)
            .limit(limit)
        )
    )


def remove(session: Session, ids: Iterable[int]) -> int:
    """Delete parked frames by id (applied or refused for good); return how many.
    The caller commits."""
    id_list = sorted(set(ids))
    if not id_list:
        return 0
    result = session.execute(sa.delete(ParkedFrame).where(ParkedFrame.id.in_(id_list)))
    return int(getattr(result, "rowcount", 0) or 0)


def hold(session: Session, parked_id: int, detail: str) -> None:
    """Keep a parked frame whose release failed, with why, until an operator
    releases it again. The caller commits."""
    session.execute(
        sa.update(ParkedFrame)
        .where(ParkedFrame.id == parked_id)
        .values(release_requested_at=None, release_requested_by=None, detail=detail[:500])
    )


def count(session: Session, terminal_id: str, reason: str | None = None) -> int:
    """Frames ``terminal_id`` has parked (of ``reason``, or all)."""
    stmt = sa.select(sa.func.count()).where(ParkedFrame.terminal_id == terminal_id)
    if reason is not None:
        stmt = stmt.where(ParkedFrame.reason == reason)
    return int(session.scalar(stmt.select_from(ParkedFrame)) or 0)


# -- for people (web site and API) -------------------------------------------------


def summary(session: Session, viewer: Viewer, terminal_id: str | None = None) -> list[ParkedGroup]:
    """Parked frames per terminal and reason (operators); one terminal's with
    ``terminal_id``. Raises Forbidden, or NotFound for an unknown terminal."""
    require(viewer, OPERATE)
    stmt = sa.select(
        ParkedFrame.terminal_id,
        ParkedFrame.reason,
        sa.func.count(),
        sa.func.min(ParkedFrame.received_at),
        sa.func.max(ParkedFrame.received_at),
        sa.func.count(ParkedFrame.release_requested_at),
    ).group_by(ParkedFrame.terminal_id, ParkedFrame.reason)
    if terminal_id is not None:
        get_scoped(session, viewer, Terminal, terminal_id)
        stmt = stmt.where(ParkedFrame.terminal_id == terminal_id)
    rows = session.execute(stmt.order_by(ParkedFrame.terminal_id, ParkedFrame.reason))
    return [
        ParkedGroup(tid, reason, n, first, last, asked)
        for tid, reason, n, first, last, asked in rows
    ]


def counts(session: Session, viewer: Viewer) -> dict[str, int]:
    """Parked frames per terminal id (operators; terminals with none left out)."""
    require(viewer, OPERATE)
    rows = session.execute(
        sa.select(ParkedFrame.terminal_id, sa.func.count()).group_by(ParkedFrame.terminal_id)
    )
    return {tid: int(n) for tid, n in rows}


def request_release(
    session: Session,
    viewer: Viewer,
    terminal_id: str,
    *,
    reason: str | None,
    now: datetime,
    ip: str | None,
) -> int:
    """Ask the ingest to apply ``terminal_id``'s parked frames (of ``reason``,
    or all) as of when they arrived, whatever the contract says: the
    operator vouches for them. Returns how many were marked; the ingest
    applies them within seconds and deletes each it applied (a frame that
    still cannot be applied, e.g. its birth is still missing, stays parked).
    Operators only; audited as ``terminal.parked.release``."""
    return _act(session, viewer, terminal_id, reason=reason, now=now, ip=ip, release=True)


def discard(
    session: Session,
    viewer: Viewer,
    terminal_id: str,
    *,
    reason: str | None,
    now: datetime,
    ip: str | None,
) -> int:
    """Delete ``terminal_id``'s parked frames (of ``reason``, or all) for good;
    return how many. Operators only; audited as ``terminal.parked.discard``
    with the number and the range of frames deleted."""
    return _act(session, viewer, terminal_id, reason=reason, now=now, ip=ip, release=False)


def _act(
    session: Session,
    viewer: Viewer,
    terminal_id: str,
    *,
    reason: str | None,
    now: datetime,
    ip: str | None,
    release: bool,
) -> int:
    require(viewer, OPERATE)
    terminal = get_scoped(session, viewer, Terminal, terminal_id)
    if reason is not None and reason not in REASONS:
        raise Invalid(N_("Unknown reason %(reason)s."), reason=reason)
    where = [ParkedFrame.terminal_id == terminal.id]
    if reason is not None:
        where.append(ParkedFrame.reason == reason)
    span = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.min(ParkedFrame.received_at),
            sa.func.max(ParkedFrame.received_at),
        ).where(*where)
    ).one()
    n = int(span[0])
    if n == 0:
        return 0
    if release:
        session.execute(
            sa.update(ParkedFrame)
            .where(*where)
            .values(release_requested_at=now, release_requested_by=viewer.email[:254])
        )
    else:
        session.execute(sa.delete(ParkedFrame).where(*where))
    session.add(
        AuditEntry(
            at=now,
            actor=viewer.email[:254],
            actor_user_id=viewer.user_id,
            customer_id=terminal.customer_id,
            action="terminal.parked.release" if release else "terminal.parked.discard",
            object_type="terminal",
            object_id=terminal.id,
            details={
                "reason": reason or "all",
                "frames": n,
                "received_from": _iso(span[1]),
                "received_until": _iso(span[2]),
            },
            ip=ip,
        )
    )
    session.commit()
    return n


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _insert_for(session: Session) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    return sqlite.insert
