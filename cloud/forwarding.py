"""Forwarding data to customers' own servers as SenML JSON (RFC 8428).

The ingest worker calls :func:`enqueue_samples` with the samples of each
accepted data frame, in the frame's transaction; one ledger row per enabled
endpoint (and per 500 records) goes into the notification outbox, and the
delivery worker POSTs it signed with the endpoint's HMAC secret (see
:mod:`cloud.notify.webhook`), retrying with backoff and dead-lettering after
the retry budget. Forwarding is part of the contract, not an alarm
notification: its rows are never billable.

A pack for terminal ``T0001`` looks like::

    [{"bn": "mimamori:T0001:", "bt": 1764201600, "n": "io", "u": "mA", "v": 1.2},
     {"n": "t", "u": "Cel", "v": 25.3},
     {"n": "io", "u": "mA", "t": 60, "v": 1.3}]

Times are seconds (``bt`` absolute, ``t`` relative to it); units are the
channel's, with ``degC`` written as SenML's ``Cel``; kW, kWh, mA and the like
are registered SenML secondary units (RFC 8798). Channel names are made
valid SenML names: a character outside ``A-Z a-z 0-9 - : . / _`` becomes
``_`` plus its UTF-8 bytes in hex (``温度`` -> ``_e6_b8_a9_e5_ba_a6``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.errors import InvalidValue
from cloud.models import Customer, DeliveryChannel, ForwardingEndpoint, Terminal, as_utc, utcnow
from cloud.notify import ledger, webhook

MAX_RECORDS = 500
BASE_NAME_PREFIX = "mimamori:"
_UNITS = {"degC": "Cel", "°C": "Cel", "℃": "Cel", "%rh": "%RH"}
_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-:./_")

Sample = tuple[str, str, "int | float | datetime", "int | float | None"]


def senml_name(name: str) -> str:
    """``name`` with every character SenML does not allow escaped."""
    return "".join(
        c if c in _NAME_OK else "".join(f"_{b:02x}" for b in c.encode("utf-8")) for c in name
    )


def senml_unit(unit: str) -> str:
    return _UNITS.get(unit, unit)


def senml_pack(terminal_id: str, points: Iterable[Sample]) -> list[dict[str, Any]]:
    """SenML records for ``points`` of one terminal, oldest first.

    Points whose value is None are left out (not sampled). Raises
    :class:`InvalidValue` for a non-finite value or a bad timestamp.
    """
    rows = []
    for name, unit, ts, value in points:
        if value is None:
            continue
        if isinstance(value, bool) or not math.isfinite(float(value)):
            raise InvalidValue(f"{name}: value {value!r} cannot be forwarded")
        rows.append((_epoch(ts), senml_name(name), senml_unit(unit), value))
    rows.sort(key=lambda r: (r[0], r[1]))
    if not rows:
        return []
    base = rows[0][0]
    records: list[dict[str, Any]] = []
    for ts, name, unit, value in rows:
        record: dict[str, Any] = {"n": name}
        if unit:
            record["u"] = unit
        if ts != base:
            record["t"] = ts - base
        record["v"] = value
        records.append(record)
    records[0] = {"bn": f"{BASE_NAME_PREFIX}{senml_name(terminal_id)}:", "bt": base, **records[0]}
    return records


def endpoints_for(session: Session, terminal: Terminal) -> list[ForwardingEndpoint]:
    """Enabled webhook endpoints of the terminal's customer that take this
    terminal (none while the customer is deactivated)."""
    if terminal.customer_id is None:
        return []
    E = ForwardingEndpoint
    return list(
        session.scalars(
            sa.select(E)
            .join(Customer, Customer.id == E.customer_id)
            .where(
                Customer.active.is_(True),
                E.customer_id == terminal.customer_id,
                E.enabled.is_(True),
                E.kind == "webhook",  # SFTP endpoints get files (cloud.notify.files)
                sa.or_(E.terminal_id.is_(None), E.terminal_id == terminal.id),
            )
            .order_by(E.id)
        )
    )


def enqueue_samples(
    session: Session, terminal: Terminal, points: Iterable[Sample], now: datetime | None = None
) -> int:
    """Queue ``points`` (channel name, unit, ts, value) for every endpoint
    forwarding ``terminal``; returns the ledger rows added.

    In the caller's transaction, never commits. The same samples queued
    twice (a redelivered frame) map to the same dedup key and are queued once.
    """
    endpoints = endpoints_for(session, terminal)
    if not endpoints:
        return 0
    records = senml_pack(terminal.id, points)
    due = as_utc(now) if now is not None else utcnow()
    added = 0
    for i in range(0, len(records), MAX_RECORDS):
        chunk = records[i : i + MAX_RECORDS]
        if i:  # every pack names its own base
            chunk = senml_pack(terminal.id, _unpack(records[0], chunk))
        digest = hashlib.sha256(webhook.senml_body(chunk)).hexdigest()[:32]
        for ep in endpoints:
            added += ledger.insert(
                session,
                dedup_key=f"fwd:{ep.id}:{terminal.id}:{digest}",
                event="forward",
                channel=DeliveryChannel.WEBHOOK,
                recipient=ep.url,
                language="en",
                payload={
                    "kind": "senml",
                    "endpoint_id": ep.id,
                    "terminal_id": terminal.id,
                    "records": chunk,
                },
                due_at=due,
                customer_id=ep.customer_id,
                billable=False,
            )
    return added


def _unpack(first: dict[str, Any], chunk: list[dict[str, Any]]) -> list[Sample]:
    """Back to absolute samples (names already escaped) for a later chunk."""
    base = int(first["bt"])
    return [(r["n"], r.get("u", ""), base + int(r.get("t", 0)), r["v"]) for r in chunk]


def _epoch(ts: int | float | datetime) -> int | float:
    if isinstance(ts, datetime):
        return int(as_utc(ts).timestamp())
    if isinstance(ts, bool) or not math.isfinite(float(ts)):
        raise InvalidValue(f"timestamp {ts!r}")
    return ts
