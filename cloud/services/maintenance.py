"""Maintenance windows a customer admin plans: which terminal (or all), which
channels (or the whole terminal), from when until when.

Alarms in a window are recorded and shown as muted and page nobody; see
:mod:`cloud.alarms.quiet` for what happens to them after the window.
Windows cannot be edited once they began (the alarms they muted say so);
ending one early sets its end to now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Customer, MaintenanceWindow, Terminal, as_utc
from cloud.services import audit
from cloud.services.errors import N_, Invalid, NotFound
from cloud.services.scope import MANAGE_TARGETS, Viewer, get_scoped, require
from cloud.services.targets import channel_names

# Longest window: a mute that outlives its maintenance hides real alarms.
MAX_LENGTH = timedelta(days=31)
MAX_REASON = 200


@dataclass(frozen=True)
class WindowInput:
    starts_at: datetime
    ends_at: datetime
    terminal_id: str | None = None
    channels: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""


def listing(
    session: Session, viewer: Viewer, *, now: datetime, include_past: bool = False
) -> list[MaintenanceWindow]:
    """The viewer's windows, those in force or to come first (by start), then
    (``include_past``) the ended ones, newest first. Staff see every window."""
    W = MaintenanceWindow
    stmt = sa.select(W)
    if not viewer.is_staff:
        stmt = stmt.where(W.customer_id == viewer.customer_id)
    current = list(session.scalars(stmt.where(W.ends_at > now).order_by(W.starts_at, W.id)))
    if not include_past:
        return current
    past = session.scalars(stmt.where(W.ends_at <= now).order_by(W.ends_at.desc()).limit(50))
    return current + list(past)


def get(session: Session, viewer: Viewer, window_id: object) -> MaintenanceWindow:
    window = session.get(MaintenanceWindow, window_id) if isinstance(window_id, int) else None
    if window is None or not (viewer.is_staff or window.customer_id == viewer.customer_id):
        raise NotFound(f"maintenance window {window_id}")
    return window


def create(
    session: Session,
    viewer: Viewer,
    customer_id: int,
    inp: WindowInput,
    *,
    now: datetime,
    ip: str | None,
) -> MaintenanceWindow:
    """Plan a window for ``customer_id``. Raises :class:`Invalid` for an end
    not after the start, an end in the past, a window longer than
    :data:`MAX_LENGTH`, or channels the terminal (or customer) does not have."""
    require(viewer, MANAGE_TARGETS)
    get_scoped(session, viewer, Customer, customer_id)
    starts_at, ends_at = as_utc(inp.starts_at), as_utc(inp.ends_at)
    if ends_at <= starts_at:
        raise Invalid(N_("The end must be after the start."))
    if ends_at <= now:
        raise Invalid(N_("The window has already ended."))
    if ends_at - starts_at > MAX_LENGTH:
        raise Invalid(N_("A maintenance window lasts at most %(days)s days."), days=MAX_LENGTH.days)
    terminal_id = None
    if inp.terminal_id:
        terminal = get_scoped(session, viewer, Terminal, inp.terminal_id)
        if terminal.customer_id != customer_id:
            raise NotFound(f"terminal {inp.terminal_id}")
        terminal_id = terminal.id
    channels = sorted(set(inp.channels))
    unknown = set(channels) - channel_names(session, customer_id, terminal_id)
    if unknown:
        raise Invalid(N_("Unknown channel %(value)s."), value=", ".join(sorted(unknown)))
    window = MaintenanceWindow(
        customer_id=customer_id,
        terminal_id=terminal_id,
        channels=channels,
        starts_at=starts_at,
        ends_at=ends_at,
        reason=inp.reason.strip()[:MAX_REASON],
        created_by_id=viewer.user_id,
    )
    session.add(window)
    session.flush()
    audit.record(
        session,
        viewer,
        "maintenance.create",
        "maintenance",
        window.id,
        at=now,
        ip=ip,
        customer_id=customer_id,
        details=_details(window),
    )
    session.commit()
    return window


def end(
    session: Session, viewer: Viewer, window_id: object, *, now: datetime, ip: str | None
) -> MaintenanceWindow | None:
    """End a window now (one in force), or delete it (one not begun yet);
    returns the window, or None when it was deleted. Ended windows stay as
    they were. Windows of an operator's announcement are the operator's."""
    require(viewer, MANAGE_TARGETS)
    window = get(session, viewer, window_id)
    if window.announcement_id is not None and not viewer.is_staff:
        raise NotFound(f"maintenance window {window_id}")
    details = _details(window)
    result: MaintenanceWindow | None = window
    if now <= as_utc(window.starts_at):
        action = "maintenance.delete"
        session.delete(window)
        result = None
    elif now < as_utc(window.ends_at):
        action = "maintenance.end"
        window.ends_at = now
    else:
        return window
    audit.record(
        session,
        viewer,
        action,
        "maintenance",
        window_id,
        at=now,
        ip=ip,
        customer_id=details["customer_id"],  # type: ignore[arg-type]
        details=details,
    )
    session.commit()
    return result


def _details(window: MaintenanceWindow) -> dict[str, object]:
    return {
        "customer_id": window.customer_id,
        "terminal_id": window.terminal_id,
        "channels": list(window.channels or []),
        "starts_at": as_utc(window.starts_at).isoformat(),
        "ends_at": as_utc(window.ends_at).isoformat(),
        "reason": window.reason,
    }
