"""Periodic CSV files for SFTP forwarding endpoints: periods, names, content, queueing.

Each enabled ``sftp`` endpoint delivers one file per closed period
(``hourly`` or ``daily`` in the endpoint's ``file_timezone``) and per
terminal, or per customer (``file_scope``). The scheduler's ``forward_files``
job calls :func:`queue_due`: once a period has ended and ``grace`` has
passed (samples still arriving from the terminals' queues get in), one
ledger row per file is queued, dedup key::

    file:<endpoint>:<period start, epoch s>:<terminal id | *>

so a file is queued once however often the job runs. The delivery worker
builds the CSV from the time-series store when it sends
(:func:`build_csv`) and uploads it (:func:`cloud.notify.sftp.upload`, which
writes each name once). File rows are forwarding: never billable.

File name: ``mimamori_<terminal id | C<customer id>>_<local start>.csv``
with the start as ``YYYYMMDDTHHMM+HHMM`` (the offset says the zone), e.g.
``mimamori_TA1_20261206T0900+0900.csv``. Content (RFC 4180, UTF-8, CRLF)::

    time,terminal,terminal_name,channel,name,value,unit,state
    2026-12-06T09:00:00+09:00,TA1,Sub A,leak1.ior,漏電 主幹,1.2,mA,
    2026-12-06T09:00:00+09:00,TA1,Sub A,di.di3,受電遮断器,1,,入

``name`` is the customer's label of the channel (its wire name when it has
none), ``state`` a contact's state name for its value.
"""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import (
    Channel,
    ChannelLabel,
    Customer,
    DeliveryChannel,
    ForwardingEndpoint,
    Terminal,
    TerminalStatus,
    as_utc,
)
from cloud.notify import ledger
from cloud.timeseries import Point, TimeSeriesStore
from protocol.config import CONTACT_KINDS

HEADER = ("time", "terminal", "terminal_name", "channel", "name", "value", "unit", "state")
# At most this many periods are queued per endpoint and run: a long outage
# of the scheduler catches up over a few runs instead of in one transaction.
MAX_CATCH_UP = 48
_PAGE = 10_000


def zone_of(endpoint: ForwardingEndpoint) -> ZoneInfo:
    return ZoneInfo(endpoint.file_timezone or "Asia/Tokyo")


def period_start(endpoint: ForwardingEndpoint, at: datetime) -> datetime:
    """Start (UTC) of the period holding ``at``, cut in the endpoint's zone."""
    local = as_utc(at).astimezone(zone_of(endpoint))
    local = local.replace(minute=0, second=0, microsecond=0)
    if endpoint.file_period == "daily":
        local = local.replace(hour=0)
    return local.astimezone(UTC)


def period_end(endpoint: ForwardingEndpoint, start: datetime) -> datetime:
    """End of the period starting at ``start``: an hour later, or the next
    local midnight (a day is 23 or 25 hours across a daylight-saving change)."""
    if endpoint.file_period != "daily":
        return as_utc(start) + timedelta(hours=1)
    zone = zone_of(endpoint)
    day = as_utc(start).astimezone(zone).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def file_name(endpoint: ForwardingEndpoint, owner: str, start: datetime) -> str:
    local = as_utc(start).astimezone(zone_of(endpoint))
    return f"mimamori_{owner}_{local:%Y%m%dT%H%M%z}.csv"


def queue_due(session: Session, now: datetime, grace: timedelta) -> int:
    """Queue the files of every period that ended at least ``grace`` ago;
    return the ledger rows added. The caller commits."""
    added = 0
    endpoints = session.scalars(
        sa.select(ForwardingEndpoint)
        .join(Customer, Customer.id == ForwardingEndpoint.customer_id)
        .where(
            ForwardingEndpoint.kind == "sftp",
            ForwardingEndpoint.enabled.is_(True),
            Customer.active.is_(True),  # a deactivated customer gets no files
        )
        .order_by(ForwardingEndpoint.id)
    ).all()
    for ep in endpoints:
        start = as_utc(ep.files_until or ep.files_from or period_start(ep, now))
        for _ in range(MAX_CATCH_UP):
            end = period_end(ep, start)
            if end + grace > now:
                break
            added += _queue_period(session, ep, start, end, now)
            ep.files_until = start = end
    return added


def _queue_period(
    session: Session, ep: ForwardingEndpoint, start: datetime, end: datetime, now: datetime
) -> int:
    terminals = _terminals(session, ep)
    if not terminals:
        return 0
    groups = (
        [([tid], tid) for tid in terminals]
        if ep.file_scope == "terminal"
        else [(terminals, f"C{ep.customer_id}")]
    )
    added = 0
    for ids, owner in groups:
        who = owner if ep.file_scope == "terminal" else "*"
        added += ledger.insert(
            session,
            dedup_key=f"file:{ep.id}:{int(start.timestamp())}:{who}",
            event="forward",
            channel=DeliveryChannel.WEBHOOK,
            recipient=ep.url,
            language="en",
            payload={
                "kind": "csv",
                "endpoint_id": ep.id,
                "terminals": ids,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "name": file_name(ep, owner, start),
            },
            due_at=now,
            customer_id=ep.customer_id,
            billable=False,
        )
    return added


def _terminals(session: Session, ep: ForwardingEndpoint) -> list[str]:
    if ep.terminal_id is not None:
        return [ep.terminal_id]
    return list(
        session.scalars(
            sa.select(Terminal.id)
            .where(
                Terminal.customer_id == ep.customer_id,
                Terminal.status != TerminalStatus.DECOMMISSIONED,
            )
            .order_by(Terminal.id)
        )
    )


def build_csv(
    session: Session,
    store: TimeSeriesStore,
    endpoint: ForwardingEndpoint,
    *,
    terminal_ids: Sequence[str],
    start: datetime,
    end: datetime,
) -> bytes:
    """The file's bytes: every sample of ``terminal_ids`` in ``[start, end)``,
    by time, terminal and channel."""
    zone = zone_of(endpoint)
    names = dict(
        session.execute(
            sa.select(Terminal.id, Terminal.name).where(Terminal.id.in_(list(terminal_ids)))
        ).all()
    )
    channels = session.execute(
        sa.select(Channel.terminal_id, Channel.name, Channel.unit, Channel.kind)
        .where(Channel.terminal_id.in_(list(terminal_ids)), Channel.retired_at.is_(None))
        .order_by(Channel.terminal_id, Channel.alias)
    ).all()
    labels = {
        (row.terminal_id, row.channel): row
        for row in session.scalars(
            sa.select(ChannelLabel).where(ChannelLabel.terminal_id.in_(list(terminal_ids)))
        )
    }
    # Each series comes oldest first, a page at a time; merging them keeps
    # memory to a page per series however long the period.
    series = []
    for tid, channel, unit, kind in channels:
        label = labels.get((tid, channel))
        shown = (label.display_name if label else "") or channel
        states = (label.state_off, label.state_on) if label and kind in CONTACT_KINDS else None
        series.append(_rows(store, (tid, channel, shown, unit), states, start, end))
    rows = heapq.merge(*series, key=lambda r: (r[0], r[1], r[2]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for ts, tid, channel, shown, value, unit, state in rows:
        at = datetime.fromtimestamp(ts, zone).isoformat()
        writer.writerow(
            (at, tid, names.get(tid) or "", channel, shown, f"{value:.10g}", unit, state)
        )
    return out.getvalue().encode("utf-8")


def _rows(
    store: TimeSeriesStore,
    what: tuple[str, str, str, str],
    states: tuple[str, str] | None,
    start: datetime,
    end: datetime,
) -> Iterator[tuple[Any, ...]]:
    """(ts, terminal, channel, name, value, unit, state) of one series, oldest first."""
    tid, channel, shown, unit = what
    lo = start
    while True:
        points: list[Point] = store.raw(tid, channel, lo, end, _PAGE)
        for p in points:
            state = "" if states is None else (states[1] if p.value else states[0])
            yield (p.ts, tid, channel, shown, p.value, unit, state)
        if len(points) < _PAGE:
            return
        lo = datetime.fromtimestamp(points[-1].ts + 1, UTC)
