"""Graph data (raw or min/mean/max buckets) and CSV export with explicit time zones."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from cloud.timeseries import Point
from tests.support.web import (
    T0,
    login_as,
)

END = int(T0.timestamp())


def series(client, **params):
    response = client.get("/terminals/TA1/series.json", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return response.get_json()


def test_a_day_is_raw_samples(client):
    login_as(client, "viewer_a")
    d = series(client, channel="leak1.ior", start=END - 86400, end=END)
    assert d["raw"] is True and d["width"] is None and d["unit"] == "mA"
    assert len(d["t"]) == 1440 and d["t"][0] == END - 86400 and d["t"][-1] == END - 60
    assert d["min"] == d["mean"] == d["max"]


def test_long_ranges_come_as_min_mean_max_buckets(client, world):
    # A year of hourly samples on another channel.
    year = 365 * 86400
    points = [
        Point("TA1", "th1.rh", ts, 40 + (ts // 3600) % 24) for ts in range(END - year, END, 3600)
    ]
    world.store.write(points)
    login_as(client, "viewer_a")
    d = series(client, channel="th1.rh", start=END - year, end=END, points=1000)
    assert d["raw"] is False and len(d["t"]) <= 1000
    assert d["width"] % 3600 == 0
    assert all(lo <= m <= hi for lo, m, hi in zip(d["min"], d["mean"], d["max"], strict=True))
    assert min(d["min"]) == 40 and max(d["max"]) == 63
    # Buckets are aligned to midnight JST (UTC+9) once they are a day or wider.
    if d["width"] >= 86400:
        assert all((t + 9 * 3600) % 86400 == 0 for t in d["t"][1:])
    # Zooming into one day of the same data gives raw samples again.
    day = series(client, channel="th1.rh", start=END - 86400, end=END)
    assert day["raw"] is True and len(day["t"]) == 24


def test_point_limit_and_bad_requests(client):
    login_as(client, "viewer_a")
    d = series(client, channel="leak1.ior", start=END - 2 * 86400, end=END, points=100)
    assert d["raw"] is False and len(d["t"]) <= 100
    assert client.get("/terminals/TA1/series.json?channel=nope").status_code == 404
    assert (
        client.get(
            f"/terminals/TA1/series.json?channel=leak1.ior&start={END}&end={END - 1}"
        ).status_code
        == 400
    )


def read_csv(response):
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")  # for spreadsheet programs
    return list(csv.reader(io.StringIO(text[1:])))


def test_csv_is_in_jst_by_default_and_says_so(client):
    login_as(client, "admin_a")
    response = client.get(
        "/terminals/TA1/export.csv?start=2026-03-09&end=2026-03-09&channel=leak1.ior&channel=pm1.kw"
    )
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="TA1_20260309-20260309.csv"' in response.headers["Content-Disposition"]
    rows = read_csv(response)
    assert rows[0] == ["time (JST, UTC+09:00)", "leak1.ior [mA]", "pm1.kw [kW]"]
    # 2026-03-09 00:00 JST is 2026-03-08 15:00 UTC; samples exist from 03-08 03:00 UTC.
    assert rows[1][0] == "2026-03-09 00:00:00" and len(rows) == 1 + 1440
    assert rows[-1][0] == "2026-03-09 23:59:00"
    first_utc = int(datetime(2026, 3, 8, 15, 0, tzinfo=UTC).timestamp())
    assert float(rows[1][1]) == round(10 + 3 * ((first_utc % 86400) / 86400), 2)


def test_csv_in_utc_on_request(client):
    login_as(client, "admin_a")
    rows = read_csv(
        client.get("/terminals/TA1/export.csv?start=2026-03-09&end=2026-03-09&tz=UTC&channel=th1.t")
    )
    assert rows[0] == ["time (UTC, UTC+00:00)", "th1.t [degC]"]
    assert rows[1][0] == "2026-03-09 00:00:00"


def test_csv_with_a_zone_that_changes_offset_writes_the_offset_per_row(client, world):
    login_as(client, "admin_a")
    # Europe/Berlin switches to summer time on 2026-03-29.
    start = int(datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp())
    world.store.write(
        [Point("TA1", "th1.t", ts, 5.0) for ts in range(start, start + 2 * 86400, 6 * 3600)]
    )
    rows = read_csv(
        client.get(
            "/terminals/TA1/export.csv?start=2026-03-28&end=2026-03-29"
            "&tz=Europe/Berlin&channel=th1.t"
        )
    )
    assert rows[0][0] == "time (Europe/Berlin, offset per row)"
    assert rows[1][0].endswith("+01:00") and rows[-1][0].endswith("+02:00")


def test_csv_refuses_bad_ranges(client):
    login_as(client, "admin_a")
    assert (
        client.get("/terminals/TA1/export.csv?start=2026-03-09&end=2026-03-01").status_code == 400
    )
    assert (
        client.get("/terminals/TA1/export.csv?start=2024-01-01&end=2026-03-01").status_code == 400
    )
    assert client.get("/terminals/TA1/export.csv?start=x&end=y").status_code == 400
    assert (
        client.get("/terminals/TA1/export.csv?start=2026-03-09&end=2026-03-09&tz=Mars").status_code
        == 400
    )


def test_latest_json(client):
    login_as(client, "viewer_a")
    d = client.get("/terminals/TA1/latest.json").get_json()
    assert d["terminal"] == "TA1" and d["values"]["leak1.ior"]["ts"] == END - 60
