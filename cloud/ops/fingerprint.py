"""Row counts and content checksums of every table, to prove a restore exact.

Each table's rows are read in primary-key order, every row is written as one
canonical JSON line (datetimes in ISO form, JSON documents with sorted keys,
floats by their shortest round-trip repr) and the lines are hashed with
SHA-256. Tables are found by reflection, so tables added by later migrations
(or the ``alembic_version`` row) are covered without a code change.

Fingerprints are comparable between two databases of the same dialect (a
backup and its restore), not across dialects: types round-trip differently.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Fingerprint = dict[str, dict[str, Any]]


def table_names(conn: Connection) -> list[str]:
    """User tables of the database (SQLite internals excluded), sorted."""
    names = sa.inspect(conn).get_table_names()
    return sorted(n for n in names if not n.startswith("sqlite_"))


def fingerprint(conn: Connection, page: int = 5000) -> Fingerprint:
    """``{table: {"rows": n, "sha256": hex}}`` for every table of ``conn``."""
    meta = sa.MetaData()
    names = table_names(conn)
    meta.reflect(conn, only=names)
    out: Fingerprint = {}
    for name in names:
        table = meta.tables[name]
        order = list(table.primary_key.columns) or list(table.columns)
        digest = hashlib.sha256()
        rows = 0
        result = conn.execution_options(stream_results=True, yield_per=page).execute(
            sa.select(table).order_by(*order)
        )
        for row in result:
            digest.update(_line(row))
            rows += 1
        out[name] = {"rows": rows, "sha256": digest.hexdigest()}
    return out


def differences(want: Fingerprint, have: Fingerprint) -> list[str]:
    """Human-readable differences between two fingerprints (empty if equal)."""
    problems = []
    for name in sorted(set(want) | set(have)):
        w, h = want.get(name), have.get(name)
        if w is None:
            problems.append(f"{name}: not in the backup")
        elif h is None:
            problems.append(f"{name}: missing after restore")
        elif w != h:
            problems.append(
                f"{name}: {w['rows']} rows in the backup, {h['rows']} restored"
                if w["rows"] != h["rows"]
                else f"{name}: content differs"
            )
    return problems


def _line(row: sa.Row[Any]) -> bytes:
    values = [canonical(v) for v in row]
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode() + b"\n"


def canonical(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)  # exact; also keeps NaN/inf representable
    if isinstance(value, decimal.Decimal | uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value
