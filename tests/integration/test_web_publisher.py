"""The web's paho publisher against the project's real mosquitto (ACL, accounts):
a settings save reaches the terminal as a retained config frame, and what the
broker refuses comes back as an error that leaves nothing saved."""

from __future__ import annotations

import pytest

from cloud.broker import account_from_row
from cloud.models import ConfigStatus, Terminal
from cloud.services.errors import PublishError
from cloud.services.publisher import PahoPublisher
from protocol import frames
from protocol.topics import downlink, downlink_filter, uplink
from tests.support.broker import HOST, MosquittoBroker, connected
from tests.support.web import (
    csrf_token,
    login_as,
    make_app,
)

pytestmark = pytest.mark.integration

ACCOUNTS = [
    account_from_row("TA1", "pw-TA1", "terminal"),
    account_from_row("web", "pw-web", "web"),
]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with MosquittoBroker(tmp_path_factory.mktemp("broker-web"), ACCOUNTS) as b:
        yield b


def publisher(broker, password="pw-web", timeout_s=5.0):
    return PahoPublisher(HOST, broker.ports["service"], "web", password, timeout_s=timeout_s)


def test_a_saved_setting_reaches_the_terminal_retained(broker, world, clock):
    app = make_app(world, clock, publisher=publisher(broker))
    client = login_as(app.test_client(), "admin_a")
    rid = world.ids["rule_a"]
    token = csrf_token(client, "/terminals/TA1/settings")
    response = client.post(
        "/terminals/TA1/settings",
        data={
            "csrf_token": token,
            f"rule-{rid}-present": "1",
            f"rule-{rid}-warn": "27",
            f"rule-{rid}-alarm": "50",
            f"rule-{rid}-enabled": "1",
            "heartbeat": "300",
            "upload": "60",
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    # The terminal connects afterwards and still gets it: the broker retained it.
    with connected(broker, "terminal", "TA1", "pw-TA1") as terminal:
        terminal.subscribe(downlink_filter("TA1"))
        msg = terminal.expect()
    assert msg.topic == downlink("TA1", "config") and msg.retain
    frame = frames.decode(msg.payload)
    assert frame["version"] == 1 and frame["config"]["thresholds"][0]["warn"] == 27
    with world.session() as s:
        assert s.get(Terminal, "TA1").config_status == ConfigStatus.PENDING


def test_wrong_password_is_a_publish_error(broker):
    with pytest.raises(PublishError, match="refused"):
        publisher(broker, password="wrong").publish(downlink("TA1", "config"), b"\x80", retain=True)


def test_topic_outside_the_web_role_is_refused(broker):
    with pytest.raises(PublishError, match="refused"):
        publisher(broker).publish(uplink("TA1", "data"), b"\x80", retain=False)


def test_unreachable_broker_leaves_the_settings_unsaved(world, clock):
    from cloud.demo.procs import free_port

    dead = PahoPublisher(HOST, free_port(), "web", "pw-web", timeout_s=2.0)
    app = make_app(world, clock, publisher=dead)
    client = login_as(app.test_client(), "admin_a")
    token = csrf_token(client, "/terminals/TA1/settings")
    response = client.post(
        "/terminals/TA1/settings", data={"csrf_token": token, "heartbeat": "120", "upload": "60"}
    )
    assert response.status_code == 503
    with world.session() as s:
        assert s.get(Terminal, "TA1").config_status == ConfigStatus.NONE
