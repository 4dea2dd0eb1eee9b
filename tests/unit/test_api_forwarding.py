"""Forwarding endpoints through the REST API (Flask's test client): SenML
webhooks and SFTP file destinations, as the site's *Forwarding* page has
them; another customer's endpoints answer 404 like missing ones; every
change is in the audit log."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from cloud.models import AuditEntry, ForwardingEndpoint
from cloud.notify import sftp
from tests.support.api import bearer, issue_tokens

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHjY6MMyLxs5I4UjJBDVfqUAvwp1doE3fHYcipS44N9p"
SFTP = {
    "name": "基幹サーバ",
    "url": "sftp://mimamori@bms.acme.test:2222/incoming",
    "host_key": f"bms.acme.test {HOST_KEY}",  # as ssh-keyscan prints it
    "file_period": "hourly",
    "file_scope": "customer",
}


@pytest.fixture
def call(client: Any, world: Any) -> Any:
    tokens = issue_tokens(world)

    def request(who: str, method: str, path: str, **kwargs: Any) -> Any:
        return client.open(path, method=method, headers=bearer(tokens[who]), **kwargs)

    return request


def actions(world: Any, endpoint_id: int) -> list[str]:
    with world.session() as s:
        return list(
            s.scalars(
                sa.select(AuditEntry.action)
                .where(AuditEntry.object_type == "forwarding")
                .where(AuditEntry.object_id == str(endpoint_id))
                .order_by(AuditEntry.id)
            )
        )


def test_sftp_endpoint_crud_with_its_public_key(call: Any, world: Any) -> None:
    r = call("admin_a", "POST", "/api/v1/forwarding-endpoints", json=SFTP)
    assert r.status_code == 201, r.get_json()
    made = r.get_json()
    assert r.headers["Location"].endswith(f"/api/v1/forwarding-endpoints/{made['id']}")
    assert made["customer_id"] == world.ids["customer_a"]
    assert (made["kind"], made["file_period"], made["file_scope"]) == ("sftp", "hourly", "customer")
    assert made["file_timezone"] == "Asia/Tokyo"  # the customer's, not given
    assert made["host_key"] == HOST_KEY and made["host_key_fingerprint"].startswith("SHA256:")
    assert "hmac_secret" not in made
    key = made["public_key"]
    assert key.startswith("ssh-ed25519 ") and "PRIVATE" not in str(made)
    # the key shown is the endpoint's own: its private half signs the uploads
    with world.session() as s:
        private = s.get(ForwardingEndpoint, made["id"]).ssh_key
    assert sftp.public_line(private, "").split()[1] == key.split()[1]
    got = call("admin_a", "GET", f"/api/v1/forwarding-endpoints/{made['id']}").get_json()
    assert got == made
    listed = call("admin_a", "GET", "/api/v1/forwarding-endpoints").get_json()
    assert made in listed["items"] and listed["next_cursor"] is None

    # a change without host_key keeps the pinned key and unsaid file settings
    u = call(
        "admin_a",
        "PUT",
        f"/api/v1/forwarding-endpoints/{made['id']}",
        json={"url": SFTP["url"], "name": "夜間", "enabled": False, "file_period": "daily"},
    )
    assert u.status_code == 200, u.get_json()
    changed = u.get_json()
    assert (changed["name"], changed["enabled"], changed["file_period"]) == ("夜間", False, "daily")
    assert (changed["host_key"], changed["file_scope"]) == (HOST_KEY, "customer")
    # no switching kinds
    hook = {"url": "https://hooks.acme.test/in"}
    r = call("admin_a", "PUT", f"/api/v1/forwarding-endpoints/{made['id']}", json=hook)
    assert r.status_code == 422

    rotated = call("admin_a", "POST", f"/api/v1/forwarding-endpoints/{made['id']}/secret")
    assert rotated.status_code == 200
    assert set(rotated.get_json()) == {"public_key"} and rotated.get_json()["public_key"] != key
    assert (
        call("admin_a", "DELETE", f"/api/v1/forwarding-endpoints/{made['id']}").status_code == 204
    )
    assert call("admin_a", "GET", f"/api/v1/forwarding-endpoints/{made['id']}").status_code == 404
    assert actions(world, made["id"]) == [
        "forwarding.create",
        "forwarding.update",
        "forwarding.secret.rotate",
        "forwarding.delete",
    ]


def test_webhook_endpoint_secret_comes_once(call: Any) -> None:
    made = call(
        "admin_a",
        "POST",
        "/api/v1/forwarding-endpoints",
        json={"url": "https://hooks.acme.test/in"},
    ).get_json()
    assert made["kind"] == "webhook" and len(made["hmac_secret"]) >= 32
    assert made["public_key"] is None and made["file_period"] is None
    got = call("admin_a", "GET", f"/api/v1/forwarding-endpoints/{made['id']}").get_json()
    assert "hmac_secret" not in got
    rotated = call("admin_a", "POST", f"/api/v1/forwarding-endpoints/{made['id']}/secret")
    assert set(rotated.get_json()) == {"hmac_secret"}
    assert rotated.get_json()["hmac_secret"] != made["hmac_secret"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({**SFTP, "host_key": ""}, "host key"),
        ({**SFTP, "host_key": "ssh-ed25519 not-base64!"}, "host key"),
        ({**SFTP, "url": "sftp://bms.acme.test/incoming"}, "sftp://user@host"),
        ({**SFTP, "url": "sftp://u:pw@bms.acme.test/x"}, "no password"),
        ({**SFTP, "url": "sftp://u@127.0.0.1/x"}, "public internet address"),
        ({**SFTP, "file_period": "weekly"}, "period"),
        ({**SFTP, "file_timezone": "Mars/Base"}, "Mars/Base"),
    ],
)
def test_bad_sftp_endpoints_are_422_and_nothing_is_kept(
    call: Any, world: Any, body: dict[str, Any], why: str
) -> None:
    def count() -> Any:
        with world.session() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(ForwardingEndpoint))

    before = count()
    r = call("admin_a", "POST", "/api/v1/forwarding-endpoints", json=body)
    assert r.status_code == 422, r.get_json()
    assert why in r.get_json()["error"]["message"]
    assert count() == before


def test_viewers_read_but_do_not_change_and_customers_see_only_their_own(
    call: Any, world: Any
) -> None:
    staff = call(
        "operator",
        "POST",
        "/api/v1/forwarding-endpoints",
        json={**SFTP, "customer_id": world.ids["customer_b"]},
    )
    assert staff.status_code == 201, staff.get_json()
    theirs = staff.get_json()["id"]
    path = f"/api/v1/forwarding-endpoints/{theirs}"
    for method, url, body in (
        ("GET", path, None),
        ("PUT", path, {"url": SFTP["url"]}),
        ("DELETE", path, None),
        ("POST", path + "/secret", None),
        ("POST", "/api/v1/forwarding-endpoints", {**SFTP, "customer_id": world.ids["customer_b"]}),
    ):
        r = call("admin_a", method, url, json=body)
        assert r.status_code == 404, (method, url, r.get_json())
    listed = call("admin_a", "GET", "/api/v1/forwarding-endpoints").get_json()["items"]
    assert {e["customer_id"] for e in listed} == {world.ids["customer_a"]}
    assert actions(world, theirs) == ["forwarding.create"]

    mine = call("admin_a", "POST", "/api/v1/forwarding-endpoints", json=SFTP).get_json()["id"]
    assert call("viewer_a", "GET", f"/api/v1/forwarding-endpoints/{mine}").status_code == 200
    for method, url in (
        ("PUT", f"/api/v1/forwarding-endpoints/{mine}"),
        ("POST", f"/api/v1/forwarding-endpoints/{mine}/secret"),
        ("DELETE", f"/api/v1/forwarding-endpoints/{mine}"),
        ("POST", "/api/v1/forwarding-endpoints"),
    ):
        assert call("viewer_a", method, url, json=SFTP).status_code == 403, (method, url)
