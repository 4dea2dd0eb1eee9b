"""The price list: what the service sells and what each item costs from when.

The items are fixed in code, because the code decides who uses them; their
prices are data (table ``prices``, :class:`cloud.models.ops.Price`), changed
by operators from a month on, with the history kept. Until an operator sets
one, an item costs its shipped default, the service sheet's figure where the
sheet gives one: registration ¥5,000 per terminal and 絶縁監視メール通報サービス
¥780 a month. The other monthly figures are this project's defaults.

How each item is charged (``charge``):

- ``once``: the registration fee, in the month a terminal is registered;
- ``monthly``: a **service function**, per terminal and month of its
  contract, for each function the terminal uses that month. A terminal uses
  a function when it had a channel of one of the function's ``kinds`` at
  some time in the month (its wiring, as its birth frames declared it); it
  uses data forwarding when an enabled forwarding endpoint of its customer
  covers it (the endpoint's terminal, or all of them);
- ``notification``: per billable notification delivered in the month.

All prices are integer yen before consumption tax. A price of ¥0 means the
item is not charged; it leaves no line on the invoice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models.ops import Price

ONCE, MONTHLY, NOTIFICATION = "once", "monthly", "notification"
FORWARDING = "forwarding"


@dataclass(frozen=True)
class Item:
    """One thing the service sells."""

    code: str
    charge: str  # once / monthly / notification
    default: int  # yen, before tax
    ja: str
    en: str
    # Channel kinds (protocol.frames.KINDS) that make a terminal use this function.
    kinds: frozenset[str] = frozenset()

    def name(self, language: str) -> str:
        return self.ja if language == "ja" else self.en


ITEMS: Mapping[str, Item] = MappingProxyType(
    {
        i.code: i
        for i in (
            Item("registration", ONCE, 5000, "初期登録料", "Registration fee"),
            Item(
                "insulation",
                MONTHLY,
                780,
                "絶縁監視メール通報サービス",
                "Insulation monitoring with mail alerts",
                frozenset({"leak"}),
            ),
            Item(
                "power",
                MONTHLY,
                980,
                "電力・デマンド監視サービス",
                "Power and demand monitoring",
                frozenset({"power", "energy", "demand", "voltage", "current", "pf"}),
            ),
            Item(
                "environment",
                MONTHLY,
                480,
                "温湿度監視サービス",
                "Temperature and humidity monitoring",
                frozenset({"temperature", "humidity"}),
            ),
            Item(
                "contact",
                MONTHLY,
                480,
                "接点監視サービス",
                "Contact (equipment status) monitoring",
                frozenset({"contact"}),
            ),
            Item(FORWARDING, MONTHLY, 500, "データ転送サービス", "Data forwarding"),
            Item("notification", NOTIFICATION, 10, "通報料", "Notification fee"),
        )
    }
)
FUNCTIONS = tuple(i for i in ITEMS.values() if i.charge == MONTHLY)


def functions_of(kinds: set[str], forwarded: bool) -> list[Item]:
    """The service functions a terminal with channels of ``kinds`` uses."""
    return [f for f in FUNCTIONS if (f.code == FORWARDING and forwarded) or (f.kinds & kinds)]


def in_force(session: Session, day: date) -> dict[str, int]:
    """Price of every item on ``day`` (see :class:`cloud.models.ops.Price`)."""
    prices = {code: item.default for code, item in ITEMS.items()}
    rows = session.execute(
        sa.select(Price.item, Price.unit_price)
        .where(Price.effective_from <= day)
        .order_by(Price.item, Price.effective_from)
    )
    for code, price in rows:
        if code in prices:  # an item this code no longer sells is not charged
            prices[code] = int(price)
    return prices


@dataclass(frozen=True)
class Change:
    """A price row as the price-list page shows it."""

    item: str
    effective_from: date
    unit_price: int
    created_by: str


def history(session: Session) -> list[Change]:
    """Every price change ever set, newest date first."""
    return [
        Change(p.item, p.effective_from, int(p.unit_price), p.created_by)
        for p in session.scalars(sa.select(Price).order_by(Price.effective_from.desc(), Price.item))
    ]
