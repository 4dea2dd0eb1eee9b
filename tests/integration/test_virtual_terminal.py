"""A virtual terminal end to end: real agent, simulated sensors on a pty, the project's Mosquitto.

``python -m edge.host`` reads three simulated devices (``python -m
firmware_sim serve --pty``, time frozen so values are exact) and talks to the
broker with its own terminal account; the test plays the cloud with a
service account (acking every frame as it arrives, as the ingest does once
it stored it), decodes with ``cloud.codec.decode_frame`` and waits on
frames with deadlines.
"""

from __future__ import annotations

import math
import signal
import time

import pytest

from cloud.broker import account_from_row
from protocol import topics
from tests.support.broker import MosquittoBroker
from tests.support.sim import Control, SimProcess
from tests.support.virtual_terminal import (
    TerminalProcess,
    Uplink,
    cmd_frame,
    config_frame,
    password,
    site_for,
)

pytestmark = pytest.mark.integration

TIDS = ("VT1", "VT2", "VT3", "VT4", "VT5", "VT6")
ACCOUNTS = [account_from_row(t, password(t), "terminal") for t in TIDS] + [
    account_from_row("ingest", "pw-ingest", "ingest")
]
WIRING = [
    {"unit": 1, "profile": "IM-100", "name": "leak1"},
    {"unit": 2, "profile": "PM-300", "name": "pm1"},
    {"unit": 3, "profile": "TH-10", "name": "th1"},
]
CHANNELS = [  # (name, unit, kind, exp) in alias order
    ("leak1.io", "mA", "leak", -1),
    ("leak1.ior", "mA", "leak", -1),
    ("leak1.v", "V", "voltage", -1),
    ("pm1.kw", "kW", "power", -2),
    ("pm1.kwh", "kWh", "energy", -1),
    ("pm1.v", "V", "voltage", -1),
    ("pm1.a", "A", "current", -2),
    ("pm1.pf", "", "pf", -3),
    ("th1.t", "degC", "temperature", -1),
    ("th1.rh", "%RH", "humidity", -1),
]
FAST = {"sample": {"interval": 1}, "bus": {"timeout_ms": 200, "retries": 1}}
CLOUD = {
    "upload": 2,
    "heartbeat": 30,
    "thresholds": [{"channel": "leak1.ior", "cond": "hi", "warn": 20, "alarm": 30, "hyst": 2}],
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with MosquittoBroker(tmp_path_factory.mktemp("vt-broker"), ACCOUNTS) as b:
        yield b


@pytest.fixture
def sim():
    with SimProcess(
        "--pty",
        "--control",
        "127.0.0.1:0",
        "--device",
        "insulation:1",
        "--device",
        "meter:2",
        "--device",
        "thermo:3",
        "--speed",
        "0",
        "--start",
        "2026-06-01T14:00",
        "--seed",
        "7",
    ) as s:
        yield s


@pytest.fixture
def control(sim):
    c = Control(sim.address("control"))
    yield c
    c.close()


def cloud_side(broker, tid, client_id=None, clean=True):
    """The cloud's subscriber for one terminal's uplink (service listener)."""
    c = broker.client(
        "service",
        "ingest",
        "pw-ingest",
        client_id=client_id or "",
        clean=clean,
        session_expiry=None if clean else 3600,
    )
    c.connect_ok()
    assert [rc.value for rc in c.subscribe(topics.PREFIX + "/" + tid + "/up/#")] == [1]
    return c


def test_birth_then_data_with_right_values_and_units(broker, sim, control, tmp_path):
    tid = "VT1"
    with cloud_side(broker, tid) as sub:
        up = Uplink(sub, acks=True)
        site = site_for(tid, broker.ports["terminal"], wiring=WIRING, **FAST)
        sub.publish(topics.downlink(tid, "config"), config_frame(tid, 1, CLOUD), retain=True)
        with TerminalProcess(tmp_path, site, sim.endpoints["pty"]) as vt:
            birth = up.wait_for(lambda f: f["type"] == "birth", 20, "birth")
            assert up.frames()[0] is birth  # nothing before the birth
            # fw is "<version> <interpreter> ...", e.g. "0.1.0 cpython 3.11.7 linux"
            assert (birth["boot"], birth["fw"].split()[0]) == (1, "0.1.0")
            assert [
                (c["name"], c["unit"], c["kind"], c["exp"]) for c in birth["channels"]
            ] == CHANNELS
            assert [(d["name"], d["model"], d["status"]) for d in birth["devices"]] == [
                ("leak1", "IM-100", "reference"),
                ("pm1", "PM-300", "test"),
                ("th1", "TH-10", "test"),
            ]
            assert [c["alias"] for c in birth["channels"]] == list(range(len(CHANNELS)))
            data = up.wait_for(lambda f: f["type"] == "data", 15, "a data frame")
            served = {}
            for unit, prefix in ((1, "leak1"), (2, "pm1"), (3, "th1")):
                values = control.ok(cmd="read", unit=unit)["device"]["values"]
                for point, value in values.items():
                    served[prefix + "." + point] = value
            for sample in data["samples"]:
                assert "quality" not in sample
                for (name, _unit, _kind, exp), raw in zip(CHANNELS, sample["values"], strict=True):
                    assert isinstance(raw, int), name  # raw counts on the wire
                    assert math.isclose(raw * 10.0**exp, served[name], abs_tol=1e-9), name
            assert data["unsynced"] is False  # host clock as NTP
            assert abs(data["ts"] - time.time()) < 10
            assert [s["dt"] for s in data["samples"]][1:] == [1] * (len(data["samples"]) - 1)
            vt.stop()
        sub.publish(topics.downlink(tid, "config"), b"", retain=True)  # clear retained


def test_config_acked_alarm_within_seconds_invalid_config_kept_out(broker, sim, control, tmp_path):
    tid = "VT2"
    with cloud_side(broker, tid) as sub:
        up = Uplink(sub, acks=True)
        site = site_for(tid, broker.ports["terminal"], wiring=WIRING, **FAST)
        cfg_topic = topics.downlink(tid, "config")
        sub.publish(cfg_topic, config_frame(tid, 5, CLOUD), retain=True)
        with TerminalProcess(tmp_path, site, sim.endpoints["pty"]) as vt:
            ack = up.wait_for(lambda f: f["type"] == "cfgack", 20, "cfgack v5")
            assert (ack["version"], ack["ok"], ack["reason"]) == (5, True, "applied")
            # an invalid config is refused with its reason; the old one stays
            bad = {"upload": 2, "thresholds": [{"channel": "leak9.ior", "cond": "hi", "alarm": 1}]}
            sub.publish(cfg_topic, config_frame(tid, 6, bad), retain=True)
            nack = up.wait_for(
                lambda f: f["type"] == "cfgack" and f["version"] == 6, 10, "cfgack v6"
            )
            assert nack["ok"] is False
            assert nack["reason"] == "thresholds[0].channel: no such channel in the wiring"
            up.wait_for(lambda f: f["type"] == "data", 15, "data")
            control.ok(cmd="set", unit=1, point="ior", value=35.0)
            forced = time.monotonic()
            alarm = up.wait_for(
                lambda f: f["type"] == "alarm" and f["level"] == 2, 5, "alarm frame for Ior"
            )
            latency = up.arrival(alarm) - forced
            assert (alarm["alias"], alarm["cond"], alarm["state"]) == (1, "hi", "raised")
            assert (alarm["value"], alarm["threshold"]) == (350, 300)  # raw: 35.0 / 30.0 mA
            assert latency < 3.0, latency
            print("alarm latency %.2f s" % latency)
            # unknown commands are answered, the terminal carries on
            sub.publish(topics.downlink(tid, "cmd"), cmd_frame(tid, 41, "self_destruct"))
            res = up.wait_for(lambda f: f["type"] == "cmdres", 10, "cmdres")
            assert (res["id"], res["ok"], res["result"]) == (41, False, "unknown command")
            assert vt.stop() == 0
        sub.publish(cfg_topic, b"", retain=True)


def test_death_on_kill_and_reboot_command_counts_boot(broker, sim, tmp_path):
    tid = "VT3"
    with cloud_side(broker, tid) as sub:
        up = Uplink(sub, acks=True)
        site = site_for(tid, broker.ports["terminal"], wiring=WIRING, **FAST)
        with TerminalProcess(tmp_path, site, sim.endpoints["pty"]) as vt:
            birth = up.wait_for(lambda f: f["type"] == "birth", 20, "birth")
            sub.publish(topics.downlink(tid, "cmd"), cmd_frame(tid, 7, "reboot"))
            res = up.wait_for(lambda f: f["type"] == "cmdres", 10, "cmdres")
            assert (res["id"], res["ok"]) == (7, True)
            death = up.wait_for(lambda f: f["type"] == "death", 10, "death of boot 1")
            assert (death["boot"], death["seq"]) == (1, birth["seq"] - 1)
            reborn = up.wait_for(
                lambda f: f["type"] == "birth" and f["boot"] == 2, 20, "birth of boot 2"
            )
            vt.stop(signal.SIGKILL)  # power cut: the broker tells the cloud
            death2 = up.wait_for(
                lambda f: f["type"] == "death" and f["boot"] == 2, 10, "death of boot 2"
            )
            assert death2["seq"] == reborn["seq"] - 1


def test_tls_listener_with_terminal_credentials(sim, tmp_path):
    tid = "VT4"
    # One terminal listener per broker (TLS or plain): a TLS broker of its own.
    with (
        MosquittoBroker(tmp_path / "tls-broker", ACCOUNTS, tls=True) as broker,
        cloud_side(broker, tid) as sub,
    ):
        up = Uplink(sub, acks=True)
        site = site_for(tid, broker.ports["terminal_tls"], wiring=WIRING, tls=True, **FAST)
        assert broker.pki is not None
        sub.publish(
            topics.downlink(tid, "config"), config_frame(tid, 1, {"upload": 1}), retain=True
        )
        with TerminalProcess(
            tmp_path, site, sim.endpoints["pty"], args=("--ca", str(broker.pki.ca))
        ) as vt:
            up.wait_for(lambda f: f["type"] == "birth", 20, "birth over TLS")
            up.wait_for(lambda f: f["type"] == "data", 15, "data over TLS")
            vt.stop()
        sub.publish(topics.downlink(tid, "config"), b"", retain=True)


def test_wrong_password_backs_off_and_never_publishes(broker, tmp_path):
    tid = "VT5"
    with cloud_side(broker, tid) as sub:
        up = Uplink(sub, acks=True)
        site = site_for(tid, broker.ports["terminal"], wiring=WIRING, **FAST)
        site["credentials"]["password"] = "wrong"
        with TerminalProcess(tmp_path, site, None) as vt:
            vt.wait_log("connect failed", count=3, timeout=30)
            log = vt.log()
            assert "not authorised" in log or "refused" in log, log
            assert vt.stop() == 0
        assert up.frames() == []


def test_broker_restart_loses_nothing_and_repeats_nothing(sim, tmp_path):
    tid = "VT6"
    with MosquittoBroker(tmp_path / "mqtt", ACCOUNTS) as broker:
        sub = cloud_side(broker, tid, client_id="cloud-" + tid, clean=False)
        up = Uplink(sub, acks=True)
        site = site_for(tid, broker.ports["terminal"], wiring=WIRING, **FAST)
        sub.publish(
            topics.downlink(tid, "config"),
            config_frame(tid, 1, {"upload": 1, "heartbeat": 10}),
            retain=True,
        )
        with TerminalProcess(tmp_path / "vt", site, sim.endpoints["pty"]) as vt:
            up.wait_for(lambda f: f["type"] == "data", 20, "data before the outage")
            sub.close()
            broker.stop()
            down_at = time.time()
            vt.wait_log("connect failed", count=3, timeout=30)  # it noticed, and retried
            while time.time() - down_at < 6:  # the outage: frames pile up in the outbox
                time.sleep(0.2)
            broker.start()
            up_at = time.time()
            sub = broker.client(
                "service",
                "ingest",
                "pw-ingest",
                client_id="cloud-" + tid,
                clean=False,
                session_expiry=3600,
            )
            sub.connect_ok()
            assert sub.session_present
            up.switch(sub)
            # The agent's reconnect backoff doubles from 1 s per failed attempt
            # (edge/session.py); on a loaded machine the outage can cost it six
            # or seven attempts, and the next one is then up to 64 s away.
            again = up.wait_for(
                lambda f: f["type"] == "birth" and f["seq"] > 2, 150, "the birth of the reconnect"
            )
            # sampled after the reconnect: the whole backlog is in before it (FIFO)
            last = up.wait_for(
                lambda f: f["type"] == "data" and f["seq"] > again["seq"],
                30,
                "data sampled after the reconnect",
            )
            vt.stop()
        sub.close()
    every = [f for f in up.frames() if f["boot"] == 1 and f["seq"] <= last["seq"]]
    seen: set[int] = set()
    got = []  # first arrivals; repeats are what the cloud's receipts drop
    for f in every:
        if f["seq"] not in seen:
            seen.add(f["seq"])
            got.append(f)
    keys = [f["seq"] for f in got]
    # At least once: a frame the cloud had not acked when the link went (sent
    # while its subscriber was away) goes again after the reconnect; nothing
    # sent after the reconnect repeats.
    arrived = [f["seq"] for f in every]
    repeats = {k for k in seen if arrived.count(k) > 1}
    assert all(k < again["seq"] for k in repeats), f"repeated after the reconnect: {repeats}"
    births = [f for f in got if f["type"] == "birth" and f["seq"] > 0]
    assert len(births) >= 2  # one per connect
    # each connect spent a seq on its will, which the broker publishes only if the
    # connection ends uncleanly (mosquitto does so when it is stopped)
    deaths = {b["seq"] - 1 for b in births}
    assert sorted(set(keys) | deaths) == list(range(last["seq"] + 1)), "a frame is missing"
    assert all(f["seq"] in deaths for f in got if f["type"] == "death")
    queued = [f["seq"] for f in got if f not in births and f["type"] != "death"]
    assert queued == sorted(queued), "queued frames out of order"
    offline = [f for f in got if f["type"] == "data" and down_at + 1 <= f["ts"] <= up_at - 1]
    assert len(offline) >= 3  # sampled during the outage, delivered afterwards
