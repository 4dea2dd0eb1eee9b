"""The install's InfluxDB step against a real server that requires accounts:
the service's account runs the whole store without admin rights."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cloud.admin.errors import AdminError
from cloud.admin.influx import provision
from cloud.errors import TimeseriesError
from cloud.timeseries import InfluxStore, Point
from cloud.timeseries.influx_wire import InfluxClient
from tests.support.influx import ADMIN, InfluxServer

pytestmark = pytest.mark.integration

T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def server() -> Iterator[InfluxServer]:
    with InfluxServer(auth=True) as s:
        yield s


def store_as(server: InfluxServer, user: str, password: str, database: str) -> InfluxStore:
    return InfluxStore(InfluxClient(server.url, user, password, 5.0), database, settle_s=0)


def test_the_service_account_stores_and_queries_but_administers_nothing(server):
    admin = InfluxClient(server.url, *ADMIN)
    assert provision(admin, "mimamori", "mimamori", "first-secret") == (True, True)
    # A rerun (the install again) keeps the data and sets the password anew.
    assert provision(admin, "mimamori", "mimamori", "second-secret") == (False, False)
    store = store_as(server, "mimamori", "second-secret", "mimamori")
    store.prepare()
    points = [Point("T1", "ior", T0 + 60 * i, float(i)) for i in range(120)]
    assert store.write(points) == 120
    store.settle()  # SELECT ... INTO the rollups
    assert store.count("T1", "ior", T0, T0 + 7200) == 120
    assert store.query("T1", "ior", T0, T0 + 7200, max_points=10).buckets
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as fh:
        assert store.export(fh) == 120
    store.delete_before(T0 + 3600)  # retention: DELETE
    assert store.count("T1", "ior", T0, T0 + 7200) == 60
    # No admin rights: it can neither create databases nor read another one.
    provision(admin, "other", "someone", "x" * 12)
    with pytest.raises(TimeseriesError):
        store_as(server, "mimamori", "second-secret", "elsewhere").create_database()
    with pytest.raises(TimeseriesError):
        store_as(server, "mimamori", "second-secret", "other").prepare()
    # The old password is gone.
    with pytest.raises(TimeseriesError):
        store_as(server, "mimamori", "first-secret", "mimamori").prepare()
    store.client.close()
    admin.close()


def test_a_missing_database_is_named_and_not_created(server):
    admin = InfluxClient(server.url, *ADMIN)
    store = InfluxStore(admin, "never_made")
    with pytest.raises(
        TimeseriesError, match=r"MIMAMORI_INFLUX_DATABASE.*'never_made' does not exist"
    ):
        store.prepare()
    (shown,) = admin.query("", ["SHOW DATABASES"])
    assert ["never_made"] not in shown["series"][0]["values"]
    admin.close()


def test_the_service_account_may_not_be_an_admin(server):
    admin = InfluxClient(server.url, *ADMIN)
    with pytest.raises(AdminError, match="is an admin"):
        provision(admin, "mimamori", ADMIN[0], "whatever-secret")
    bad = InfluxClient(server.url, ADMIN[0], "wrong")
    with pytest.raises(AdminError, match="authorization failed"):
        provision(bad, "mimamori", "mimamori", "whatever-secret")
    admin.close()
