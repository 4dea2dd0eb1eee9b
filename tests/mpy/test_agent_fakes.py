"""Test doubles for the agent, shared by the tests/mpy/test_agent_*.py modules.

Runs under CPython (pytest) and real MicroPython, so it only uses what both
have. The doubles are real enough to be tested themselves (the test_*
functions at the end):

- :class:`ScriptedBroker` plays the MQTT broker behind a umqtt.simple-style
  client (:class:`ScriptedClient`): it records every publish and the last
  will, keeps retained messages, and can refuse connections, withhold
  PUBACKs, cut the connection (firing the will) and deliver downlink. It
  also plays the cloud's ingest: every uplink frame it PUBACKs is named in
  an ``ack`` frame delivered with the client's next read (``acks = False``:
  an ingest that is down). It counts the bytes each MQTT packet would take
  on the wire.
- :class:`FakeHal` is the agent's HAL on one virtual clock: the FakeLink's,
  so Modbus wire time and agent time agree.
- :func:`site` / :func:`start` build a state directory and an agent over
  two IM-100 insulation monitors (6 channels) on an in-process RS-485 line.
"""

import json
import os
import time

from edge.agent import Agent
from edge.fakelink import FakeLink, FakeSlave
from protocol import frames, topics
from protocol.errors import ProtocolError

TID = "T0001"
PASSWORD = "pw-T0001"
START_UNIX = 1764201600  # 2025-11-27T00:00:00Z: the board's RTC at power-on
# IM-100 registers (docs/sensors.md): io, ior, v in 0.1 mA / 0.1 V
IM100_A = {0: 253, 1: 12, 2: 2031}
IM100_B = {0: 180, 1: 9, 2: 1012}


class Rebooted(Exception):
    """FakeHal.reset(): the agent asked the board to reboot."""


def fresh_dir(name):
    """An empty directory of its own; removed at exit where the platform can."""
    try:
        import atexit
        import shutil
        import tempfile
    except ImportError:  # MicroPython: in-memory filesystem, gone with the process
        stamp = time.ticks_ms()
        n = 0
        while True:
            path = "/tmp/mm-agent-%s-%d-%d" % (name, stamp, n)
            try:
                os.mkdir(path)
                return path
            except OSError:
                n += 1
    path = tempfile.mkdtemp(prefix="mm-agent-%s-" % name)
    atexit.register(shutil.rmtree, path, True)
    return path


def _varint_len(n):
    k = 1
    while n > 127:
        n >>= 7
        k += 1
    return k


def packet_len(remaining):
    """Bytes of an MQTT packet whose remaining length is ``remaining``."""
    return 1 + _varint_len(remaining) + remaining


class ScriptedBroker:
    """The broker side of the scripted exchange.

    Knobs: ``reachable`` (False: connect fails before CONNACK, like a
    refused TCP connect), ``refuse`` (CONNACK with an error code),
    ``withhold_puback`` (publishes raise OSError after the broker got them:
    at-least-once redelivery follows), ``fail_publish`` (the next n publishes
    are lost on the way: OSError, not delivered), ``acks`` (False: no ack
    frames, as with the ingest down; frames PUBACKed meanwhile are never
    acked), ``ack_ts`` (the ack frames' ts; None: the newest acked frame's,
    a cloud clock that agrees with the terminal's, so acks never set an
    unsynced clock). Records: ``published`` ``[(topic, payload)]`` in arrival
    order, ``deaths`` (wills fired), ``sessions`` (accepted CONNECTs),
    ``acks_sent`` (ack frames delivered), ``bytes_up``/``bytes_down`` (MQTT
    packet bytes each way).
    """

    def __init__(self):
        self.reachable = True
        self.refuse = False
        self.withhold_puback = False
        self.fail_publish = 0
        self.published = []
        self.deaths = []
        self.retained = {}
        self.pending = []  # downlink waiting for the connected client
        self.sessions = 0
        self.attempts = 0
        self.client = None  # the connected client
        self.will = None
        self.subscriptions = []
        self.bytes_up = 0
        self.bytes_down = 0
        self.packets_up = 0
        self.payload_up = 0  # PUBLISH payload bytes accepted
        self.record = True  # False: count only (long benchmarks)
        self.acks = True
        self.ack_ts = None
        self.acks_sent = 0
        self._to_ack = {}  # boot -> [seqs PUBACKed, not yet named in an ack]
        self._ack_at = 0  # newest ts of those frames

    # -- test controls
    def deliver(self, topic, payload, retain=False):
        """Send a downlink message (kept for the next connect when ``retain``)."""
        if retain:
            self.retained[topic] = payload
        if self.client is not None:
            self.pending.append((topic, payload))

    def cut(self):
        """Lose the connection (no DISCONNECT): the broker publishes the will."""
        if self.client is not None:
            self.client.alive = False
            self.client = None
            self._fire_will()

    def frames(self, kind=None):
        """Decoded uplink frames in arrival order, optionally of one kind."""
        out = []
        for topic, payload in self.published:
            f = frames.decode(payload)
            topics.check_frame_topic(topic, f)
            if kind is None or f["type"] == kind:
                out.append(f)
        return out

    # -- the client's side
    def _connect(self, client, size):
        self.attempts += 1
        if not self.reachable:
            raise OSError(111)  # ECONNREFUSED
        self.bytes_up += size
        self.packets_up += 1
        self.bytes_down += 4  # CONNACK
        if self.refuse:
            raise OSError("CONNACK refused: 5 not authorized")
        if self.client is not None:  # session take-over: the old one is gone
            self.client.alive = False
            self._fire_will()
        self.client = client
        self.will = client.will
        self.sessions += 1
        self.subscriptions = []
        self.pending = []
        self._to_ack = {}  # acks for the old session are lost with it

    def _fire_will(self):
        if self.will is not None:
            self.deaths.append(self.will)
            self.published.append((self.will[0], self.will[1]))
            self.will = None

    def _subscribe(self, topic, qos):
        self.bytes_up += packet_len(2 + 2 + len(topic) + 1)
        self.bytes_down += 5  # SUBACK
        self.packets_up += 1
        self.subscriptions.append(topic)
        prefix = topic[:-1] if topic.endswith("#") else topic
        for t, p in self.retained.items():
            if t.startswith(prefix):
                self.pending.append((t, p))

    def _publish(self, topic, msg, qos):
        size = packet_len(2 + len(topic) + (2 if qos else 0) + len(msg))
        self.packets_up += 1
        if self.fail_publish:
            self.fail_publish -= 1
            self.bytes_up += size
            raise OSError(110)  # lost on the way; the connection is gone
        self.bytes_up += size
        self.payload_up += len(msg)
        if self.record:
            self.published.append((topic, bytes(msg)))
        if qos and self.withhold_puback:
            raise OSError(110)  # ETIMEDOUT waiting for PUBACK
        if qos:
            self.bytes_down += 4
            if self.acks and "/up/" in topic and not topic.endswith("/death"):
                self._will_ack(msg)

    def _will_ack(self, msg):
        try:
            frame = frames.decode(msg)
        except ProtocolError:
            return  # not a frame (the doubles' own tests): nothing to ack
        self._to_ack.setdefault(frame["boot"], []).append(frame["seq"])
        self._ack_at = max(self._ack_at, frame["ts"])

    def _flush_acks(self):
        """The ingest's acks for what was PUBACKed since the last read, one frame per boot."""
        todo = self._to_ack
        self._to_ack = {}
        for boot in sorted(todo):
            ack = {
                "type": "ack",
                "tid": self.client.client_id,
                "boot": 0,
                "seq": 0,
                "ts": self._ack_at if self.ack_ts is None else self.ack_ts,
                "unsynced": False,
                "for_boot": boot,
                "ranges": frames.ack_ranges(todo[boot]),
            }
            self.pending.append((topics.downlink(ack["tid"], "ack"), frames.encode(ack)))
            self.acks_sent += 1

    def _disconnect(self, client):
        self.bytes_up += 2
        if self.client is client:
            self.client = None
            self.will = None  # clean DISCONNECT: the will is discarded

    def _closed(self, client):
        if self.client is client:
            self.client = None
            self._fire_will()


class ScriptedClient:
    """umqtt.simple's client API (plus ``close``) talking to a ScriptedBroker."""

    def __init__(self, broker, client_id, user=None, password=None, keepalive=0):
        self.broker = broker
        self.client_id = client_id
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.cb = None
        self.will = None
        self.alive = False
        self.pings = 0

    def _check(self):
        if not self.alive:
            raise OSError(104)  # ECONNRESET

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, bytes(msg), retain, qos)

    def connect(self, clean_session=True):
        rl = 10 + 2 + len(self.client_id)
        if self.will is not None:
            rl += 2 + len(self.will[0]) + 2 + len(self.will[1])
        if self.user:
            rl += 2 + len(self.user) + 2 + len(self.password)
        self.broker._connect(self, packet_len(rl))
        self.alive = True
        return False

    def subscribe(self, topic, qos=0):
        self._check()
        self.broker._subscribe(topic, qos)

    def publish(self, topic, msg, retain=False, qos=0):
        self._check()
        try:
            self.broker._publish(topic, msg, qos)
        except OSError:
            self.alive = False
            self.broker._closed(self)
            raise

    def check_msg(self):
        self._check()
        b = self.broker
        if b._to_ack:
            b._flush_acks()
        if b.pending:
            topic, msg = b.pending.pop(0)
            if topic.endswith("/ack"):  # QoS 0: no packet id, no PUBACK
                b.bytes_down += packet_len(2 + len(topic) + len(msg))
            else:
                b.bytes_down += packet_len(2 + len(topic) + 2 + len(msg))
                b.bytes_up += 4  # our PUBACK
            self.cb(topic.encode(), msg)
            return 0x30
        return None

    def ping(self):
        self._check()
        self.pings += 1
        self.broker.bytes_up += 2
        self.broker.bytes_down += 2

    def disconnect(self):
        self.alive = False
        self.broker._disconnect(self)

    def close(self):
        if self.alive:
            self.alive = False
            self.broker._closed(self)


class FakeWatchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class FakeHal:
    """The agent's HAL for tests: one virtual ms clock, scripted broker, FakeLink bus."""

    rtc_epoch = 1970

    def __init__(self, link, broker, rtc_start=START_UNIX):
        self.link = link
        self.broker = broker
        self.ticks_ms = link.ticks_ms
        self.ticks_diff = link.ticks_diff
        self.sleep_ms = link.sleep_ms
        self._rtc_start = rtc_start
        self.rtc = self._rtc if rtc_start is not None else None
        self.net = True
        self.ntp_unix = None  # None: the NTP server does not answer
        self.ntp_calls = 0
        self.rtc_set = []
        self.resets = 0
        self.wdt = None
        self._seed = 12345

    def _rtc(self):
        return self._rtc_start + self.link.now_us // 1000000

    def set_rtc(self, unix):
        self.rtc_set.append(unix)

    def open_link(self, bus):
        return self.link

    def mqtt_client(self, client_id, broker, credentials, keepalive):
        return ScriptedClient(
            self.broker, client_id, credentials["username"], credentials["password"], keepalive
        )

    def network_up(self):
        return self.net

    def ntp_time(self, server):
        self.ntp_calls += 1
        if self.ntp_unix is None:
            raise OSError(110)
        return self.ntp_unix

    def watchdog(self, timeout_ms):
        self.wdt = FakeWatchdog(timeout_ms)
        return self.wdt

    def mem_free(self):
        return 48123

    def rssi(self):
        return -71

    def random(self, n):
        self._seed = (self._seed * 1103515245 + 12345) & 0x7FFFFFFF
        return self._seed % n if n > 0 else 0

    def reset(self):
        self.resets += 1
        raise Rebooted()


def site(**over):
    """A site part: two IM-100 on units 1 and 2 (aliases 0..5), 10 s sampling."""
    s = {
        "terminal_id": TID,
        "broker": {"host": "broker.test", "port": 1883, "tls": False},
        "credentials": {"username": TID, "password": PASSWORD},
        "wiring": [
            {"unit": 1, "profile": "IM-100", "name": "leak1"},
            {"unit": 2, "profile": "IM-100", "name": "leak2"},
        ],
        "sample": {"interval": 10},
        "bus": {"timeout_ms": 100, "retries": 0},
        "clock": {"ntp": ""},
    }
    s.update(over)
    return s


class Rig:
    """A terminal on the bench: state directory, bus with two sensors, broker, HAL.

    ``slaves`` replaces the two IM-100 (``slave1``, ``slave2``) with other
    FakeSlaves; ``site_over`` then names their wiring.
    """

    def __init__(self, name, site_over=None, cloud=None, rtc_start=START_UNIX, slaves=None):
        self.dir = fresh_dir(name)
        with open(self.dir + "/site.json", "w") as f:
            f.write(json.dumps(site(**(site_over or {}))))
        if cloud is not None:
            with open(self.dir + "/cloud.json", "w") as f:
                f.write(json.dumps(cloud))
        if slaves is None:
            self.slave1 = FakeSlave(1, inputs=dict(IM100_A))
            self.slave2 = FakeSlave(2, inputs=dict(IM100_B))
            slaves = (self.slave1, self.slave2)
        self.link = FakeLink(*slaves)
        self.broker = ScriptedBroker()
        self.hal = FakeHal(self.link, self.broker, rtc_start)
        self.agent = None
        self.log = []

    def boot(self):
        """A new Agent over the state directory, as after a power-up."""
        self.agent = Agent(self.hal, self.dir, log=self.log.append)
        return self.agent

    def now_ms(self):
        return self.link.ticks_ms()

    def run(self, seconds):
        """Step the agent for ``seconds`` of virtual time, sleeping as it asks."""
        end = self.link.ticks_ms() + int(seconds * 1000)
        while self.link.ticks_diff(end, self.link.ticks_ms()) > 0:
            wait = self.agent.step()
            left = self.link.ticks_diff(end, self.link.ticks_ms())
            self.link.sleep_ms(min(max(wait, 1), max(left, 1)))

    def step(self):
        return self.agent.step()

    def downlink(self, kind, frame, retain=None):
        """Encode a cloud frame and deliver it on the terminal's downlink topic."""
        f = {"type": kind, "tid": TID, "boot": 0, "seq": 1, "ts": START_UNIX, "unsynced": False}
        f.update(frame)
        topic = topics.downlink(TID, kind)
        self.broker.deliver(topic, frames.encode(f), kind == "config" if retain is None else retain)

    def config(self, version, **cloud):
        self.downlink("config", {"version": version, "config": cloud})

    def cmd(self, cid, name, args=None):
        self.downlink("cmd", {"id": cid, "name": name, "args": args or {}})


def seqs(frames_):
    return [f["seq"] for f in frames_]


# -- the doubles themselves ---------------------------------------------------------


def test_scripted_client_records_publish_and_counts_bytes():
    b = ScriptedBroker()
    c = ScriptedClient(b, "T1", "T1", "pw", 60)
    c.set_last_will("mm/v1/T1/up/death", b"\x87", False, 1)
    c.connect(True)
    # CONNECT: 10 + (2+2) id + (2+17+2+1) will + (2+2+2+2) credentials = 44
    assert b.bytes_up == 2 + 44
    c.publish("mm/v1/T1/up/data", b"x" * 37, False, 1)
    assert b.published == [("mm/v1/T1/up/data", b"x" * 37)]
    assert b.bytes_up == 46 + 2 + 16 + 2 + 2 + 37
    assert b.bytes_down == 4 + 4


def test_scripted_broker_fires_will_on_cut_not_on_disconnect():
    b = ScriptedBroker()
    c = ScriptedClient(b, "T1")
    c.set_last_will("mm/v1/T1/up/death", b"D", False, 1)
    c.connect(True)
    b.cut()
    assert b.deaths == [("mm/v1/T1/up/death", b"D", False, 1)]
    try:
        c.publish("t", b"x", False, 1)
        raise AssertionError("publish on a cut connection must fail")
    except OSError:
        pass
    c2 = ScriptedClient(b, "T1")
    c2.set_last_will("mm/v1/T1/up/death", b"E", False, 1)
    c2.connect(True)
    c2.disconnect()
    assert len(b.deaths) == 1


def test_scripted_broker_withheld_puback_raises_after_delivery():
    b = ScriptedBroker()
    c = ScriptedClient(b, "T1")
    c.connect(True)
    b.withhold_puback = True
    try:
        c.publish("t", b"x", False, 1)
        raise AssertionError("a withheld PUBACK must raise")
    except OSError:
        pass
    assert b.published == [("t", b"x")]  # delivered: the resend will be a duplicate
    assert not c.alive


def test_retained_downlink_is_delivered_after_subscribe():
    b = ScriptedBroker()
    b.deliver("mm/v1/T1/down/config", b"cfg", retain=True)
    got = []
    c = ScriptedClient(b, "T1")
    c.set_callback(lambda t, m: got.append((t, m)))
    c.connect(True)
    c.subscribe("mm/v1/T1/down/#", 1)
    assert c.check_msg() == 0x30
    assert c.check_msg() is None
    assert got == [(b"mm/v1/T1/down/config", b"cfg")]


def test_scripted_broker_acks_what_it_puback_ed_like_the_ingest():
    b = ScriptedBroker()
    got = []
    c = ScriptedClient(b, "T1")
    c.set_callback(lambda t, m: got.append((t, m)))
    c.connect(True)
    for seq in (4, 5, 7):
        f = {
            "type": "status",
            "tid": "T1",
            "boot": 2,
            "seq": seq,
            "ts": START_UNIX,
            "unsynced": False,
            "uptime": 1,
            "queued": 0,
            "dropped": 0,
            "rssi": None,
            "heap": 1,
            "errors": {},
        }
        c.publish(topics.uplink("T1", "status"), frames.encode(f), False, 1)
    assert c.check_msg() == 0x30
    assert c.check_msg() is None
    ack = frames.decode(got[0][1])
    assert got[0][0] == topics.downlink("T1", "ack").encode()
    assert (ack["for_boot"], ack["ranges"], ack["ts"]) == (2, [[4, 2], [7, 1]], START_UNIX)
    b.acks = False  # the ingest is down: PUBACKs still come, acks never
    c.publish(topics.uplink("T1", "status"), frames.encode(f), False, 1)
    assert c.check_msg() is None and b.acks_sent == 1
