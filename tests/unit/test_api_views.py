"""The REST API through Flask's test client: every endpoint, as the roles use
it, with another customer's ids answering 404 exactly like missing ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cloud.models import Alarm, AlarmCondition, AlarmState, NotificationTarget, Terminal
from cloud.services.credentials import check_mqtt_password
from tests.support.api import bearer, issue_tokens
from tests.support.web import T0, login_as

START = int(T0.timestamp()) - 3600
END = int(T0.timestamp())


@pytest.fixture
def tokens(world: Any) -> dict[str, str]:
    return issue_tokens(world)


@pytest.fixture
def call(client: Any, tokens: dict[str, str]) -> Any:
    def request(who: str, method: str, path: str, **kwargs: Any) -> Any:
        return client.open(path, method=method, headers=bearer(tokens[who]), **kwargs)

    return request


def error_code(response: Any) -> str:
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


# -- identity and errors -------------------------------------------------------


def test_me_names_the_token_owner(call: Any, world: Any) -> None:
    r = call("admin_a", "GET", "/api/v1/me")
    assert r.status_code == 200
    assert r.get_json() == {
        "user_id": world.ids["admin_a"],
        "email": "admin@acme.test",
        "role": "customer_admin",
        "customer_id": world.ids["customer_a"],
    }


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer mm_wrong", "Basic abc", "Bearer " + "x" * 300]
)
def test_missing_or_wrong_token_is_401_json(client: Any, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    r = client.get("/api/v1/terminals", headers=headers)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_code(r) == "unauthorized"


def test_unknown_api_path_and_method_are_json(call: Any) -> None:
    r = call("admin_a", "GET", "/api/v1/nothing-here")
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = call("admin_a", "PATCH", "/api/v1/terminals")
    assert r.status_code == 405 and error_code(r) == "method_not_allowed"
    assert "GET" in r.headers["Allow"]


def test_site_pages_keep_html_errors(client: Any) -> None:
    r = client.get("/no-such-page")
    assert r.status_code == 404 and r.mimetype == "text/html"


def test_bad_json_body_is_400(call: Any) -> None:
    r = call("admin_a", "POST", "/api/v1/targets", data="not json", content_type="application/json")
    assert r.status_code == 400 and error_code(r) == "bad_request"


# -- terminals, channels, samples ------------------------------------------------


def test_terminals_are_scoped(call: Any) -> None:
    assert [t["id"] for t in call("admin_a", "GET", "/api/v1/terminals").get_json()["items"]] == [
        "TA1"
    ]
    assert [t["id"] for t in call("admin_b", "GET", "/api/v1/terminals").get_json()["items"]] == [
        "TB1"
    ]
    assert [t["id"] for t in call("operator", "GET", "/api/v1/terminals").get_json()["items"]] == [
        "TA1",
        "TB1",
    ]
    one = call("admin_a", "GET", "/api/v1/terminals/TA1").get_json()
    assert one["name"] == "Sub A" and one["provisioned"] is False


def test_terminal_pages_follow_cursor_and_link(call: Any, world: Any) -> None:
    with world.session() as s:
        for i in range(5):
            s.add(Terminal(id=f"TX{i}", customer_id=None, name=f"stock {i}"))
        s.commit()
    seen: list[str] = []
    path = "/api/v1/terminals?limit=3"
    pages = 0
    while path:
        r = call("operator", "GET", path)
        assert r.status_code == 200
        body = r.get_json()
        seen += [t["id"] for t in body["items"]]
        pages += 1
        if body["next_cursor"] is None:
            assert "Link" not in r.headers
            path = ""
        else:
            link = r.headers["Link"]
            assert link.endswith('>; rel="next"') and body["next_cursor"] in link
            path = f"/api/v1/terminals?limit=3&cursor={body['next_cursor']}"
    assert seen == ["TA1", "TB1", "TX0", "TX1", "TX2", "TX3", "TX4"] and pages == 3


def test_bad_cursor_and_limit_are_400(call: Any) -> None:
    r = call("operator", "GET", "/api/v1/terminals?cursor=%%%")
    assert r.status_code == 400 and error_code(r) == "invalid_cursor"
    r = call("operator", "GET", "/api/v1/alarms?cursor=bm90LWEtbnVtYmVy")  # "not-a-number"
    assert r.status_code == 400 and error_code(r) == "invalid_cursor"
    r = call("operator", "GET", "/api/v1/terminals?limit=0")
    assert r.status_code == 400 and error_code(r) == "invalid_parameter"


def test_channels_of_a_terminal(call: Any) -> None:
    items = call("viewer_a", "GET", "/api/v1/terminals/TA1/channels").get_json()["items"]
    names = [c["name"] for c in items]
    assert "leak1.ior" in names and "th1.t" in names
    assert next(c for c in items if c["name"] == "leak1.ior")["unit"] == "mA"


def test_raw_samples_page_by_time(call: Any) -> None:
    base = f"/api/v1/terminals/TA1/samples?channel=leak1.ior&start={START}&end={END}"
    r = call("viewer_a", "GET", base + "&limit=40")
    body = r.get_json()
    assert r.status_code == 200 and len(body["items"]) == 40
    ts = [p["ts"] for p in body["items"]]
    assert ts == sorted(ts) and ts[0] >= START
    rest = call("viewer_a", "GET", base + f"&limit=40&cursor={body['next_cursor']}").get_json()
    assert len(rest["items"]) == 20 and rest["next_cursor"] is None
    assert rest["items"][0]["ts"] == ts[-1] + 60


def test_aggregated_series_downsamples(call: Any) -> None:
    r = call(
        "viewer_a",
        "GET",
        "/api/v1/terminals/TA1/series?channel=leak1.ior"
        f"&start={END - 48 * 3600}&end={END}&max_points=100",
    )
    body = r.get_json()
    assert r.status_code == 200 and body["raw"] is False and 0 < len(body["t"]) <= 100
    assert all(
        lo <= m <= hi for lo, m, hi in zip(body["min"], body["mean"], body["max"], strict=True)
    )


def test_unknown_channel_is_404_and_bad_range_400(call: Any) -> None:
    r = call("viewer_a", "GET", "/api/v1/terminals/TA1/samples?channel=nope")
    assert r.status_code == 404
    r = call(
        "viewer_a",
        "GET",
        f"/api/v1/terminals/TA1/samples?channel=leak1.ior&start={END}&end={START}",
    )
    assert r.status_code == 400 and error_code(r) == "invalid_parameter"


# -- alarms --------------------------------------------------------------------


def test_alarms_list_filters_and_acknowledge(call: Any, world: Any) -> None:
    items = call("viewer_a", "GET", "/api/v1/alarms?state=open").get_json()["items"]
    assert [a["id"] for a in items] == [world.ids["alarm_a"]]
    assert call("viewer_a", "GET", "/api/v1/alarms?severity=alarm").get_json()["items"] == []
    for empty in ("state=", "severity=", "limit="):  # found by schemathesis: an error
        assert call("viewer_a", "GET", f"/api/v1/alarms?{empty}").status_code == 400
    r = call(
        "viewer_a",
        "POST",
        f"/api/v1/alarms/{world.ids['alarm_a']}/acknowledge",
        json={"comment": "on my way"},
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["state"] == "acknowledged"
    with world.session() as s:
        alarm = s.get(Alarm, world.ids["alarm_a"])
        assert alarm is not None and alarm.ack_comment == "on my way"
    again = call("viewer_a", "POST", f"/api/v1/alarms/{world.ids['alarm_a']}/acknowledge")
    assert again.status_code == 422 and error_code(again) == "invalid"


# -- thresholds ----------------------------------------------------------------


def test_threshold_create_pushes_config_and_delete(call: Any, app: Any, world: Any) -> None:
    r = call(
        "admin_a",
        "POST",
        "/api/v1/terminals/TA1/thresholds",
        json={"channel": "th1.t", "cond": "hi", "warn": 35, "alarm": 40, "hysteresis": 1},
    )
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["rule"]["cond"] == "hi" and body["config_version"] == 1
    published = app.extensions["mimamori_publisher"].messages
    assert published and published[-1].topic == "mm/v1/TA1/down/config"
    rules = call("admin_a", "GET", "/api/v1/terminals/TA1/thresholds").get_json()["items"]
    assert {(x["channel"], x["cond"]) for x in rules} == {("leak1.ior", "leak"), ("th1.t", "hi")}
    d = call("admin_a", "DELETE", f"/api/v1/terminals/TA1/thresholds/{body['rule']['id']}")
    assert d.status_code == 200 and d.get_json()["config_version"] == 2
    with world.session() as s:
        assert s.query(AlarmCondition).filter_by(terminal_id="TA1").count() == 1


def test_threshold_rules_are_checked_and_roles_enforced(call: Any) -> None:
    r = call(
        "admin_a",
        "POST",
        "/api/v1/terminals/TA1/thresholds",
        json={"channel": "th1.t", "cond": "hi", "warn": 40, "alarm": 35},
    )
    assert r.status_code == 422 and error_code(r) == "invalid"
    r = call(
        "viewer_a",
        "POST",
        "/api/v1/terminals/TA1/thresholds",
        json={"channel": "th1.t", "cond": "hi", "warn": 35},
    )
    assert r.status_code == 403 and error_code(r) == "forbidden"
    r = call(
        "admin_a",
        "POST",
        "/api/v1/terminals/TA1/thresholds",
        json={"channel": "th1.t", "cond": "hi", "warn": "hot"},
    )
    assert r.status_code == 400 and error_code(r) == "invalid_field"


# -- targets -------------------------------------------------------------------


def test_target_crud(call: Any, world: Any) -> None:
    r = call(
        "admin_a",
        "POST",
        "/api/v1/targets",
        json={"channel": "email", "address": "night@acme.test", "min_severity": "alarm"},
    )
    assert r.status_code == 201, r.get_json()
    created = r.get_json()
    assert created["customer_id"] == world.ids["customer_a"]
    assert r.headers["Location"].endswith(f"/api/v1/targets/{created['id']}")
    listed = call("admin_a", "GET", "/api/v1/targets").get_json()["items"]
    assert {t["address"] for t in listed} == {"duty@acme.test", "night@acme.test"}
    u = call(
        "admin_a",
        "PUT",
        f"/api/v1/targets/{created['id']}",
        json={"channel": "email", "address": "day@acme.test", "enabled": False},
    )
    assert u.status_code == 200 and u.get_json()["enabled"] is False
    assert call("admin_a", "DELETE", f"/api/v1/targets/{created['id']}").status_code == 204
    assert call("admin_a", "GET", f"/api/v1/targets/{created['id']}").status_code == 404
    bad = call(
        "admin_a", "POST", "/api/v1/targets", json={"channel": "email", "address": "not an address"}
    )
    assert bad.status_code == 422


def test_webhook_targets_must_point_at_public_addresses(call: Any) -> None:
    for url in ("http://127.0.0.1:9/", "http://169.254.169.254/latest/", "http://10.0.0.8/"):
        r = call("admin_a", "POST", "/api/v1/targets", json={"channel": "webhook", "address": url})
        assert r.status_code == 422, url
        assert "public internet address" in r.get_json()["error"]["message"]


def test_webhook_target_secret_comes_with_the_creation_and_rotates(call: Any, world: Any) -> None:
    hook = {"channel": "webhook", "address": "https://hooks.acme.test/alarm"}
    created = call("admin_a", "POST", "/api/v1/targets", json=hook).get_json()
    secret = created["hmac_secret"]
    assert len(secret) >= 32
    assert (
        "hmac_secret" not in call("admin_a", "GET", f"/api/v1/targets/{created['id']}").get_json()
    )
    rotated = call("admin_a", "POST", f"/api/v1/targets/{created['id']}/secret")
    assert rotated.status_code == 200 and rotated.get_json()["hmac_secret"] not in ("", secret)
    mail = {"channel": "email", "address": "night@acme.test"}
    assert "hmac_secret" not in call("admin_a", "POST", "/api/v1/targets", json=mail).get_json()


# -- provisioning --------------------------------------------------------------


def test_register_and_provision_terminal(call: Any, world: Any) -> None:
    r = call(
        "installer",
        "POST",
        "/api/v1/terminals",
        json={"id": "TN1", "name": "New room", "customer_id": world.ids["customer_a"]},
    )
    assert r.status_code == 201, r.get_json()
    p = call("installer", "POST", "/api/v1/terminals/TN1/provision")
    assert p.status_code == 201 and p.headers["Cache-Control"] == "no-store"
    site = p.get_json()
    assert site["terminal_id"] == "TN1" and site["credentials"]["username"] == "TN1"
    password = site["credentials"]["password"]
    with world.session() as s:
        terminal = s.get(Terminal, "TN1")
        assert terminal is not None and check_mqtt_password(terminal, password)
        assert password not in (terminal.credential_hash or "")
    again = call("installer", "POST", "/api/v1/terminals/TN1/provision")
    assert again.status_code == 422
    rotated = call("installer", "POST", "/api/v1/terminals/TN1/provision", json={"rotate": True})
    assert rotated.status_code == 201
    assert rotated.get_json()["credentials"]["password"] != password


def test_text_fields_keep_to_the_documented_length_and_refuse_control_characters(
    call: Any, world: Any
) -> None:
    long_name = call(
        "installer", "POST", "/api/v1/terminals", json={"id": "TN3", "name": "x" * 201}
    )
    assert long_name.status_code == 400
    assert long_name.get_json()["error"]["code"] == "invalid_field"
    nul = call("installer", "POST", "/api/v1/terminals", json={"id": "TN3", "name": "a\u0000b"})
    assert nul.status_code == 400 and "control" in nul.get_json()["error"]["message"]
    ok = call(
        "installer",
        "POST",
        "/api/v1/terminals",
        json={"id": "TN3", "name": "x" * 200, "site_address": "1F\tB1"},
    )
    assert ok.status_code == 201
    with world.session() as s:
        terminal = s.get(Terminal, "TN3")
        assert terminal is not None and terminal.name == "x" * 200


def test_installers_may_not_take_over_a_terminal_in_service(call: Any, world: Any) -> None:
    # Commissioning: the installer registers, provisions and may redo it on site.
    call("installer", "POST", "/api/v1/terminals", json={"id": "TN4"})
    call("installer", "POST", "/api/v1/terminals/TN4/provision")
    redo = call("installer", "POST", "/api/v1/terminals/TN4/provision", json={"rotate": True})
    assert redo.status_code == 201
    password = redo.get_json()["credentials"]["password"]
    with world.session() as s:  # the terminal connected: it is in service now
        s.get(Terminal, "TN4").last_seen_at = datetime(2026, 3, 1, tzinfo=UTC)
        s.commit()
    # A new password for a live terminal would let its holder impersonate it
    # and cut the real one off: that is the operator's decision.
    taken = call("installer", "POST", "/api/v1/terminals/TN4/provision", json={"rotate": True})
    assert taken.status_code == 403 and "credentials" not in taken.get_json()
    with world.session() as s:
        assert check_mqtt_password(s.get(Terminal, "TN4"), password)
    ok = call("operator", "POST", "/api/v1/terminals/TN4/provision", json={"rotate": True})
    assert ok.status_code == 201


def test_customers_may_not_register_or_provision(call: Any) -> None:
    r = call("admin_a", "POST", "/api/v1/terminals", json={"id": "TN2"})
    assert r.status_code == 403
    r = call("admin_a", "POST", "/api/v1/terminals/TA1/provision")
    assert r.status_code == 403
    dup = call("operator", "POST", "/api/v1/terminals", json={"id": "TA1"})
    assert dup.status_code == 422
    bad = call("operator", "POST", "/api/v1/terminals", json={"id": "bad/id"})
    assert bad.status_code == 422


# -- tenant isolation: each resource of customer B, asked for by customer A -------

CROSS = [
    ("GET", "/api/v1/terminals/TB1", None),
    ("GET", "/api/v1/terminals/TB1/channels", None),
    ("GET", "/api/v1/terminals/TB1/samples?channel=leak1.ior", None),
    ("GET", "/api/v1/terminals/TB1/series?channel=leak1.ior", None),
    ("GET", "/api/v1/terminals/TB1/thresholds", None),
    ("POST", "/api/v1/terminals/TB1/thresholds", {"channel": "leak1.ior", "cond": "hi", "warn": 1}),
    ("DELETE", "/api/v1/terminals/TB1/thresholds/{rule_a}", None),
    ("GET", "/api/v1/alarms/{alarm_b}", None),
    ("POST", "/api/v1/alarms/{alarm_b}/acknowledge", {"comment": "not mine"}),
    ("GET", "/api/v1/targets/{target_b}", None),
    ("PUT", "/api/v1/targets/{target_b}", {"channel": "email", "address": "evil@acme.test"}),
    ("DELETE", "/api/v1/targets/{target_b}", None),
    ("POST", "/api/v1/targets/{target_b}/secret", None),
    (
        "POST",
        "/api/v1/targets",
        {"channel": "email", "address": "x@acme.test", "terminal_id": "TB1"},
    ),
]


def _snapshot(world: Any) -> Any:
    with world.session() as s:
        return (
            [(a.id, a.state, a.ack_comment) for a in s.query(Alarm).order_by(Alarm.id)],
            [
                (t.id, t.address)
                for t in s.query(NotificationTarget).order_by(NotificationTarget.id)
            ],
            s.query(AlarmCondition).count(),
        )


@pytest.mark.parametrize(("method", "path", "body"), CROSS)
def test_other_customers_ids_are_404_and_change_nothing(
    call: Any, world: Any, method: str, path: str, body: Any
) -> None:
    before = _snapshot(world)
    r = call("admin_a", method, path.format(**world.ids), json=body)
    assert r.status_code == 404, (path, r.status_code, r.get_json())
    assert error_code(r) == "not_found"
    # Same answer as for an id that does not exist: nothing to probe.
    missing = path.replace("TB1", "ZZ9").format(**{k: 999999 for k in world.ids})
    assert call("admin_a", method, missing, json=body).get_json() == r.get_json()
    assert _snapshot(world) == before
    with world.session() as s:
        assert s.get(Alarm, world.ids["alarm_b"]).state == AlarmState.RAISED  # type: ignore[union-attr]


def test_lists_never_show_other_customers(call: Any, world: Any) -> None:
    alarms = call("admin_a", "GET", "/api/v1/alarms").get_json()["items"]
    assert {a["terminal_id"] for a in alarms} == {"TA1"}
    filtered = call("admin_a", "GET", "/api/v1/alarms?terminal_id=TB1").get_json()["items"]
    assert filtered == []
    targets = call("admin_a", "GET", "/api/v1/targets").get_json()["items"]
    assert {t["customer_id"] for t in targets} == {world.ids["customer_a"]}


def test_unknown_query_parameter_is_400_not_ignored(call: Any) -> None:
    r = call("admin_a", "GET", "/api/v1/alarms?stat=open")
    assert r.status_code == 400 and error_code(r) == "unknown_parameter"
    assert "stat" in r.get_json()["error"]["message"]
    assert call("admin_a", "GET", "/api/v1/alarms?state=open&limit=5").status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/v1/alarms/{n}", "/api/v1/targets/{n}", "/api/v1/terminals/TA1/thresholds/{n}"]
)
def test_ids_no_row_can_have_are_404_not_500(call: Any, path: str) -> None:
    method = "DELETE" if "thresholds" in path else "GET"
    for n in (2**31, 2**64, 10**30):
        r = call("operator", method, path.format(n=n))
        assert r.status_code == 404, (path, n, r.status_code)


def test_site_pages_answer_404_for_huge_ids(client: Any) -> None:
    # The shared scope helper (cloud.services.scope.get_scoped) guards pages too.
    login_as(client, "admin_a")
    for path in ("/targets/166327951843678427891630080", "/alarms/99999999999999999999"):
        assert client.get(path).status_code == 404, path
