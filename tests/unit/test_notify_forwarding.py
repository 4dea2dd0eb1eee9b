"""SenML (RFC 8428) packs for customers' servers, and queueing them per endpoint."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from cloud.errors import InvalidValue
from cloud.forwarding import MAX_RECORDS, enqueue_samples, senml_name, senml_pack
from cloud.models import ForwardingEndpoint
from cloud.notify.webhook import senml_body
from tests.support.notify import T0, database, ledger, world

# RFC 8428 section 4.5.1: name characters, first one a letter or digit.
SENML_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-:./_]*$")


def resolve_records(records):
    """Resolved records as RFC 8428 section 4.6 defines them (base values applied)."""
    out, bn, bt = [], "", 0
    for r in records:
        bn, bt = r.get("bn", bn), r.get("bt", bt)
        out.append({"n": bn + r["n"], "u": r.get("u"), "t": bt + r.get("t", 0), "v": r["v"]})
    return out


def test_pack_of_one_sample_of_six_channels():
    ts = int(T0.timestamp())
    points = [
        ("io", "mA", ts, 1.2),
        ("ior", "mA", ts, 0.3),
        ("kw", "kW", ts, 12.34),
        ("kwh", "kWh", ts, 12345.6),
        ("v", "V", ts, 101.5),
        ("t", "degC", ts, 25.3),
    ]
    records = senml_pack("T0001", points)
    assert records[0] == {"bn": "mimamori:T0001:", "bt": ts, "n": "io", "u": "mA", "v": 1.2}
    assert records[-1] == {"n": "v", "u": "V", "v": 101.5}  # sorted by time, then name
    resolved = resolve_records(records)
    assert {r["n"]: (r["u"], r["v"]) for r in resolved}["mimamori:T0001:t"] == ("Cel", 25.3)
    assert all(SENML_NAME.match(r["n"]) for r in resolved)
    assert all(r["t"] == ts for r in resolved)


def test_times_are_relative_to_the_base_time_and_none_values_are_left_out():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    records = senml_pack(
        "T1",
        [
            ("io", "mA", t0, 1.0),
            ("io", "mA", int(t0.timestamp()) + 60, 2.0),
            ("ior", "mA", t0, None),
        ],
    )
    assert [r.get("t", 0) for r in records] == [0, 60]
    assert [r["t"] for r in resolve_records(records)] == [1767225600, 1767225660]


def test_names_outside_the_senml_alphabet_are_escaped():
    assert senml_name("pm1.kw") == "pm1.kw"
    assert senml_name("温度") == "_e6_b8_a9_e5_ba_a6"
    assert senml_name("a b") == "a_20b"
    records = senml_pack("T1", [("室温 1", "degC", 0, 20.0)])
    assert SENML_NAME.match(resolve_records(records)[0]["n"])


def test_non_finite_values_are_refused():
    with pytest.raises(InvalidValue):
        senml_pack("T1", [("io", "mA", 0, float("nan"))])


def test_body_is_compact_utf8_json_that_parses_back():
    records = senml_pack("T1", [("io", "mA", 0, 1.5)])
    assert json.loads(senml_body(records)) == records
    assert b" " not in senml_body(records)


@pytest.fixture
def session(tmp_path):
    with database(f"sqlite:///{tmp_path / 'db.sqlite3'}") as (_engine, s):
        yield s


def endpoint(session, terminal, url, **kw):
    ep = ForwardingEndpoint(
        customer_id=terminal.customer_id, url=url, hmac_secret="0123456789abcdef", **kw
    )
    session.add(ep)
    session.commit()
    return ep


def test_enqueue_one_row_per_endpoint_not_billable_and_idempotent(session):
    terminal = world(session)
    a = endpoint(session, terminal, "https://a.example.com/in")
    endpoint(session, terminal, "https://b.example.com/in", enabled=False)
    c = endpoint(session, terminal, "https://c.example.com/in", terminal_id=terminal.id)
    points = [("io", "mA", int(T0.timestamp()), 1.2)]
    assert enqueue_samples(session, terminal, points, now=T0) == 2
    assert enqueue_samples(session, terminal, points, now=T0) == 0  # redelivered frame
    session.commit()
    rows = ledger(session)
    assert [r.payload["endpoint_id"] for r in rows] == [a.id, c.id]
    assert all(not r.billable and r.event == "forward" for r in rows)
    assert rows[0].payload["records"][0]["bn"] == "mimamori:T0001:"


def test_big_batches_are_split_into_self_contained_packs(session):
    terminal = world(session)
    endpoint(session, terminal, "https://a.example.com/in")
    n = MAX_RECORDS + 10
    points = [("io", "mA", 1_700_000_000 + i, float(i)) for i in range(n)]
    assert enqueue_samples(session, terminal, points, now=T0) == 2
    session.commit()
    packs = [r.payload["records"] for r in ledger(session)]
    assert [len(p) for p in packs] == [MAX_RECORDS, 10]
    assert all("bn" in p[0] and "bt" in p[0] for p in packs)
    values = [r["v"] for p in packs for r in resolve_records(p)]
    times = [r["t"] for p in packs for r in resolve_records(p)]
    assert values == [float(i) for i in range(n)]
    assert times == [1_700_000_000 + i for i in range(n)]


def test_terminal_without_endpoints_queues_nothing(session):
    terminal = world(session)
    assert enqueue_samples(session, terminal, [("io", "mA", 0, 1.0)], now=T0) == 0
