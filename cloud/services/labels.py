"""The customer's words for channels, used wherever a person reads a channel.

A channel is known on the wire by the name the terminal made
(``leak1.ior``, ``di.di3``); people call it 「受電遮断器」. Each channel may
have a display name, a contact input the names of its two states (value 0
and value 1, e.g. 切/入 or 正常/異常), and a *key* flag marking it for the
terminal's line in the fleet overview. Labels are rows of
:class:`~cloud.models.ChannelLabel`, keyed by channel name so they survive
a birth that redeclares the channels. Unlabelled channels read as their
wire name, unlabelled states as the presentation's own words for off/on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Channel, ChannelLabel, Terminal
from cloud.models.labels import MAX_LABEL, MAX_STATE
from cloud.services import audit
from cloud.services.errors import N_, Invalid
from cloud.services.scope import CONFIGURE, Viewer, require
from protocol.config import CONTACT_KINDS
from protocol.limits import MAX_CHANNELS

# Key channels per terminal: what one line of the fleet overview holds.
MAX_KEY = 6
MAX_INPUTS = MAX_CHANNELS  # labels in one save: one per channel a terminal can have
# Shown when a terminal has no key channel marked (fleet line, first graph).
DEFAULT_KEY_CHANNELS = 3


class ChannelRef(NamedTuple):
    """What people-facing pages need of a channel row, read without the ORM
    (a page of fifty terminals holds five hundred of them)."""

    terminal_id: str
    alias: int
    name: str
    unit: str
    kind: str
    declared_at: datetime


class LabelText(NamedTuple):
    """The texts of a :class:`~cloud.models.ChannelLabel` row."""

    terminal_id: str
    channel: str
    display_name: str
    state_off: str
    state_on: str
    key: bool


@dataclass(frozen=True)
class Label:
    """One channel as people read it."""

    channel: str  # the wire name
    unit: str
    kind: str
    display_name: str = ""
    state_off: str = ""  # name of value 0; "" = unlabelled
    state_on: str = ""  # name of value 1
    key: bool = False

    @property
    def name(self) -> str:
        """The display name, else the wire name."""
        return self.display_name or self.channel

    @property
    def is_contact(self) -> bool:
        return self.kind in CONTACT_KINDS

    def state(self, value: float | None) -> str | None:
        """The state name of a contact's ``value`` (None when unlabelled, for a
        measured channel, or with no value: the caller supplies its words)."""
        if not self.is_contact or value is None:
            return None
        return (self.state_on if value else self.state_off) or None


def label(channel: Channel | ChannelRef, text: ChannelLabel | LabelText | None) -> Label:
    if text is None:
        return Label(channel.name, channel.unit, channel.kind)
    return Label(
        channel.name,
        channel.unit,
        channel.kind,
        text.display_name,
        text.state_off,
        text.state_on,
        text.key,
    )


def key_channels(every: Sequence[Label]) -> list[Label]:
    """The key channels of a terminal, else its first :data:`DEFAULT_KEY_CHANNELS`."""
    return [lb for lb in every if lb.key] or list(every[:DEFAULT_KEY_CHANNELS])


def texts_for(session: Session, terminal_ids: Sequence[str]) -> dict[str, dict[str, LabelText]]:
    """``{terminal: {channel: texts}}`` of the labels of ``terminal_ids``, in one query."""
    out: dict[str, dict[str, LabelText]] = {}
    if not terminal_ids:
        return out
    cols = sa.select(*(getattr(ChannelLabel, f) for f in LabelText._fields))
    for row in session.execute(cols.where(ChannelLabel.terminal_id.in_(list(terminal_ids)))):
        text = LabelText(*row)
        out.setdefault(text.terminal_id, {})[text.channel] = text
    return out


def current_channels(session: Session, terminal_ids: Sequence[str]) -> dict[str, list[ChannelRef]]:
    """``{terminal: [current channels by alias]}`` of ``terminal_ids``, in one query."""
    out: dict[str, list[ChannelRef]] = {tid: [] for tid in terminal_ids}
    if not terminal_ids:
        return out
    cols = sa.select(*(getattr(Channel, f) for f in ChannelRef._fields))
    rows = session.execute(
        cols.where(
            Channel.terminal_id.in_(list(terminal_ids)), Channel.retired_at.is_(None)
        ).order_by(Channel.terminal_id, Channel.alias)
    )
    for row in rows:
        ref = ChannelRef(*row)
        out[ref.terminal_id].append(ref)
    return out


def names(session: Session, terminal_ids: Sequence[str]) -> Callable[[str, str | None], str]:
    """A lookup ``(terminal, channel) -> display name`` (the wire name when
    unlabelled, "" for no channel) over ``terminal_ids``, in one query; for
    lists of alarms, whose channels may since have been retired."""
    texts = texts_for(session, list(dict.fromkeys(terminal_ids)))

    def name(terminal_id: str, channel: str | None) -> str:
        if not channel:
            return ""
        text = texts.get(terminal_id, {}).get(channel)
        return (text.display_name if text else "") or channel

    return name


def for_terminals(session: Session, terminal_ids: Sequence[str]) -> dict[str, list[Label]]:
    """Every current channel of ``terminal_ids`` as people read it, by alias
    (two queries whatever the number of terminals)."""
    channels = current_channels(session, terminal_ids)
    texts = texts_for(session, terminal_ids)
    return {
        tid: [label(ch, texts.get(tid, {}).get(ch.name)) for ch in chs]
        for tid, chs in channels.items()
    }


def for_terminal(session: Session, terminal_id: str) -> dict[str, Label]:
    """``{channel: label}`` of one terminal's current channels, in alias order."""
    return {lb.channel: lb for lb in for_terminals(session, [terminal_id])[terminal_id]}


# -- editing -----------------------------------------------------------------------


@dataclass(frozen=True)
class LabelInput:
    """The customer's words for one channel, as a form or the API gives them."""

    channel: str
    display_name: str = ""
    state_off: str = ""
    state_on: str = ""
    key: bool = False


def _text(value: str, limit: int, channel: str) -> str:
    text = " ".join(value.split())  # one line: no tabs, newlines or doubled spaces
    if len(text) > limit:
        raise Invalid(
            N_("%(channel)s: a name is longer than %(n)s characters."), channel=channel, n=limit
        )
    if not text.isprintable():
        raise Invalid(N_("%(channel)s: a name holds control characters."), channel=channel)
    return text


def save(
    session: Session,
    viewer: Viewer,
    terminal: Terminal,
    inputs: Sequence[LabelInput],
    *,
    now: datetime,
    ip: str | None,
) -> int:
    """Set the labels of the channels in ``inputs`` (others keep theirs);
    return how many changed, audit them (``terminal.labels``) and commit.

    Raises :class:`Invalid` (nothing saved) for a channel the terminal does
    not have, a text too long or holding control characters, state names on
    a measured channel, or more than :data:`MAX_KEY` key channels; and
    :class:`~cloud.services.errors.Forbidden` for a role that may not
    configure.
    """
    require(viewer, CONFIGURE)
    kinds = {ch.name: ch.kind for ch in terminal.channels}
    rows = {
        r.channel: r
        for r in session.scalars(
            sa.select(ChannelLabel).where(ChannelLabel.terminal_id == terminal.id)
        )
    }
    wanted: dict[str, LabelInput] = {}
    for inp in inputs:
        if inp.channel not in kinds:
            raise Invalid(N_("%(channel)s is not a channel of this terminal."), channel=inp.channel)
        clean = LabelInput(
            inp.channel,
            _text(inp.display_name, MAX_LABEL, inp.channel),
            _text(inp.state_off, MAX_STATE, inp.channel),
            _text(inp.state_on, MAX_STATE, inp.channel),
            bool(inp.key),
        )
        if (clean.state_off or clean.state_on) and kinds[inp.channel] not in CONTACT_KINDS:
            raise Invalid(
                N_("%(channel)s is not a contact input: it has no states to name."),
                channel=inp.channel,
            )
        wanted[inp.channel] = clean
    keys = {c for c, r in rows.items() if r.key and c in kinds and c not in wanted}
    keys |= {c for c, w in wanted.items() if w.key}
    if len(keys) > MAX_KEY:
        raise Invalid(N_("At most %(n)s key channels per terminal."), n=MAX_KEY)
    changes: dict[str, Any] = {}
    for channel, w in wanted.items():
        row = rows.get(channel)
        before = (
            (row.display_name, row.state_off, row.state_on, row.key) if row else ("", "", "", False)
        )
        after = (w.display_name, w.state_off, w.state_on, w.key)
        if before == after:
            continue
        if after == ("", "", "", False):
            session.delete(row)
        elif row is None:
            session.add(
                ChannelLabel(
                    terminal_id=terminal.id,
                    channel=channel,
                    display_name=w.display_name,
                    state_off=w.state_off,
                    state_on=w.state_on,
                    key=w.key,
                )
            )
        else:
            row.display_name, row.state_off, row.state_on, row.key = after
        changes[channel] = dict(
            zip(("display_name", "state_off", "state_on", "key"), after, strict=True)
        )
    if changes:
        audit.record(
            session,
            viewer,
            "terminal.labels",
            "terminal",
            terminal.id,
            at=now,
            ip=ip,
            customer_id=terminal.customer_id,
            details={"labels": changes},
        )
    session.commit()
    return len(changes)
