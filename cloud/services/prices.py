"""Changing the price list (operators; audited).

A change sets one item's price from the first of a month on. It may not
reach into a month that is already billed (before the current month in the
operations zone), so an issued invoice always matches the list. Setting the
same item and month again replaces that change (until the month begins it
is only a plan); the audit log keeps both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models.ops import Price
from cloud.ops import prices as price_list
from cloud.services import audit
from cloud.services.errors import N_, Invalid
from cloud.services.scope import OPERATE, Viewer, require

MAX_PRICE = 10_000_000  # yen; a typo guard, far above anything the sheet sells


@dataclass(frozen=True)
class Row:
    """One item as the price-list page shows it."""

    item: price_list.Item
    now: int  # in force today
    upcoming: list[tuple[date, int]]  # later changes already set


def overview(session: Session, today: date) -> list[Row]:
    """Every item with its price today and the changes set for later months."""
    current = price_list.in_force(session, today)
    later: dict[str, list[tuple[date, int]]] = {}
    for p in session.scalars(
        sa.select(Price).where(Price.effective_from > today).order_by(Price.effective_from)
    ):
        later.setdefault(p.item, []).append((p.effective_from, int(p.unit_price)))
    return [
        Row(item, current[code], later.get(code, [])) for code, item in price_list.ITEMS.items()
    ]


def set_price(
    session: Session,
    viewer: Viewer,
    item: str,
    unit_price: int,
    effective_from: date,
    *,
    zone: ZoneInfo,
    now: datetime,
    ip: str | None,
) -> Price:
    """Set ``item`` to ``unit_price`` yen from ``effective_from`` (the 1st of
    this month or a later one). Raises :class:`Invalid` naming the problem."""
    require(viewer, OPERATE)
    if item not in price_list.ITEMS:
        raise Invalid(N_("Unknown price list item %(item)s."), item=item)
    if type(unit_price) is not int or not 0 <= unit_price <= MAX_PRICE:
        raise Invalid(N_("A price is whole yen from 0 to %(max)s."), max=f"{MAX_PRICE:,}")
    if effective_from.day != 1:
        raise Invalid(N_("Prices change on the first of a month."))
    this_month = now.astimezone(zone).date().replace(day=1)
    if effective_from < this_month:
        raise Invalid(
            N_("%(month)s is already billed: choose this month or a later one."),
            month=effective_from.strftime("%Y-%m"),
        )
    before = price_list.in_force(session, effective_from)[item]
    row = session.scalar(
        sa.select(Price).where(Price.item == item, Price.effective_from == effective_from)
    )
    if row is None:
        row = Price(item=item, effective_from=effective_from)
        session.add(row)
    row.unit_price = unit_price
    row.created_at = now
    row.created_by = viewer.email
    session.flush()
    audit.record(
        session,
        viewer,
        "price.set",
        "price",
        item,
        at=now,
        ip=ip,
        details={
            "item": item,
            "from": effective_from.isoformat(),
            "before": before,
            "after": unit_price,
        },
    )
    session.commit()
    return row
