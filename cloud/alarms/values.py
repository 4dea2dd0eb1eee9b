"""Channel lookup and value scaling for alarm frames, and value text for messages."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Channel, ChannelLabel

# Conditions whose value and threshold are raw counts of the channel (scaled
# by its exponent). Others carry counts or states: "unreach" counts failed
# reads, "contact" is 0/1.
SCALED_CONDS = frozenset({"hi", "lo", "leak"})


class ChannelMeta(NamedTuple):
    name: str
    unit: str
    exp: int


def channel_for_alias(
    session: Session, terminal_id: str, alias: int, boot: int
) -> ChannelMeta | None:
    """The channel ``alias`` meant in boot ``boot``: the newest declaration at
    or before that boot (a reboot with unchanged sensors keeps older rows)."""
    row = session.scalars(
        sa.select(Channel)
        .where(Channel.terminal_id == terminal_id, Channel.alias == alias, Channel.boot <= boot)
        .order_by(Channel.boot.desc(), Channel.declared_at.desc(), Channel.id.desc())
        .limit(1)
    ).first()
    return None if row is None else ChannelMeta(row.name, row.unit, row.exp)


def channel_by_name(session: Session, terminal_id: str, name: str | None) -> ChannelMeta | None:
    """The newest declaration of channel ``name`` (current or retired)."""
    if name is None:
        return None
    row = session.scalars(
        sa.select(Channel)
        .where(Channel.terminal_id == terminal_id, Channel.name == name)
        .order_by(Channel.retired_at.is_not(None), Channel.declared_at.desc(), Channel.id.desc())
        .limit(1)
    ).first()
    return None if row is None else ChannelMeta(row.name, row.unit, row.exp)


def label_of(session: Session, terminal_id: str, name: str | None) -> ChannelLabel | None:
    """The customer's label of channel ``name`` (None: unlabelled or no channel)."""
    if name is None:
        return None
    return session.get(ChannelLabel, (terminal_id, name))


def state_text(label: ChannelLabel, value: float | None) -> str:
    """A contact's state name for ``value`` ("" when that state is unnamed)."""
    if value is None:
        return ""
    return label.state_on if value else label.state_off


def scale(raw: int | float | None, exp: int) -> float | None:
    """Engineering value of a raw count: ``raw * 10**exp`` without binary
    rounding noise (312 with exp -1 is 31.2, not 31.200000000000003)."""
    if raw is None:
        return None
    if isinstance(raw, int):
        return float(Decimal(raw).scaleb(exp))
    return float(Decimal(repr(float(raw))).scaleb(exp))


def quantity(value: float | None, unit: str = "", decimals: int | None = None) -> str:
    """``"31.2 mA"``; ``decimals`` None prints the shortest exact form; "" for None."""
    if value is None or not math.isfinite(value):
        return ""
    text = f"{value:.{decimals}f}" if decimals is not None else f"{value:.12g}"
    return f"{text} {unit}".strip()
