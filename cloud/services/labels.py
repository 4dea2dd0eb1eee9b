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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Channel, ChannelLabel
from protocol.config import CONTACT_KINDS


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
