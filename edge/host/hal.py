"""Host HAL: the terminal agent's hardware on a PC (a *virtual terminal*).

Everything :class:`edge.agent.Agent` asks of a HAL (see its module doc),
built from CPython parts:

- RS-485: :class:`edge.host.serial_link.SerialLink` (a USB adapter or a
  ``firmware_sim --pty`` pty), :class:`TcpRtuLink` (RTU frames over TCP, as
  ``firmware_sim --tcp`` and RTU-over-TCP gateways serve them), or
  :class:`NullLink` (no sensors: every read times out);
- MQTT: :class:`HostMQTTClient`, the umqtt.simple API on paho-mqtt, driven
  from the caller's thread (no network thread, so hundreds of agents can
  share one process);
- time: ``time.monotonic_ns`` for ticks; the host's own clock as RTC and as
  "NTP" (the operating system keeps it synchronised; a site with
  ``clock.ntp`` set to ``""`` runs on cloud time only, like a board that
  cannot reach NTP);
- a no-op watchdog, ``reset()`` that raises :class:`Reboot` (the caller
  builds a new Agent over the same state directory, as a board would boot).
"""

from __future__ import annotations

import random as _random
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.host.serial_link import SerialLink
from edge.link import Link

DEFAULT_TIMEOUT = 10.0  # seconds for CONNACK, SUBACK and each PUBACK


class Reboot(Exception):
    """Raised by :meth:`HostHal.reset`: the agent asked for a reboot."""


class MQTTError(OSError):
    """The broker refused, did not answer in time, or the connection broke."""


# -- RS-485 links -------------------------------------------------------------------


class TcpRtuLink(Link):
    """Modbus RTU frames over a TCP stream (``firmware_sim --tcp``, RTU gateways).

    Connects lazily and again after the peer closed: a gateway that restarts
    costs a few link errors, not the terminal. All failures are ``OSError``.
    """

    def __init__(self, host: str, port: int, connect_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def write(self, buf: bytes | bytearray) -> None:
        sock = self._socket()
        try:
            sock.setblocking(True)
            sock.settimeout(self.connect_timeout)
            sock.sendall(bytes(buf))
            sock.setblocking(False)
        except OSError:
            self.close()
            raise

    def read(self, n: int, timeout_ms: int) -> bytes:
        sock = self._socket()
        out = bytearray()
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        while len(out) < n:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([sock], [], [], max(0.0, left))
            if not ready:
                break
            try:
                chunk = sock.recv(n - len(out))
            except BlockingIOError:
                continue
            except OSError:
                self.close()
                raise
            if not chunk:
                self.close()
                raise ConnectionResetError("RTU-over-TCP peer closed the connection")
            out.extend(chunk)
        return bytes(out)

    def flush_input(self) -> None:
        if self._sock is None:
            return
        while True:
            try:
                chunk = self._sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                raise
            if not chunk:
                self.close()
                return


class NullLink(Link):
    """A bus with nothing on it: writes vanish, reads time out (in real time)."""

    def write(self, buf: bytes | bytearray) -> None:
        pass

    def read(self, n: int, timeout_ms: int) -> bytes:
        if timeout_ms > 0:
            time.sleep(timeout_ms / 1000)
        return b""

    def flush_input(self) -> None:
        pass


def open_sensors(spec: str | None, bus: dict[str, Any]) -> Link:
    """The link ``--sensors`` names: a tty path, ``tcp://host:port``, or None (no bus).

    Raises OSError when the port cannot be opened, ValueError for a
    malformed ``tcp://`` address.
    """
    if not spec:
        return NullLink()
    if spec.startswith("tcp://"):
        host, sep, port = spec[len("tcp://") :].rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("--sensors tcp://HOST:PORT, got %r" % spec)
        link = TcpRtuLink(host.strip("[]"), int(port))
        link._socket()  # fail now, with a clear message, if nobody listens
        return link
    return SerialLink(spec, baud=bus["baud"], parity=bus["parity"], stopbits=bus["stop"])


# -- MQTT -------------------------------------------------------------------------


class HostMQTTClient:
    """umqtt.simple's ``MQTTClient`` API on paho-mqtt (MQTT 3.1.1), plus ``close``.

    Blocking calls wait at most ``timeout`` seconds: ``connect`` for CONNACK,
    ``subscribe`` for SUBACK, ``publish(qos=1)`` for PUBACK. Every failure
    raises :class:`MQTTError` (an ``OSError``), never anything else, and
    leaves the client disconnected. Received messages are handed to the
    callback as ``(topic: bytes, msg: bytes)`` by :meth:`check_msg`, one per
    call, as umqtt does. paho's network loop runs inside these calls; paho
    sends the keepalive pings itself.
    """

    def __init__(  # noqa: PLR0917
        self,
        client_id: str,
        server: str,
        port: int = 0,
        user: str | None = None,
        password: str | None = None,
        keepalive: int = 0,
        ssl: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.client_id = client_id
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.timeout = timeout
        self.cb: Callable[[bytes, bytes], None] | None = None
        self._will: tuple[str, bytes, bool, int] | None = None
        self._paho: mqtt.Client | None = None
        self._inbox: deque[tuple[bytes, bytes]] = deque()
        self._connack: Any = None
        self._subacks: dict[int, Any] = {}
        self._lost = False
        self.packets_out = 0  # PUBLISH packets sent (for tests and benchmarks)

    # -- umqtt.simple API
    def set_callback(self, f: Callable[[bytes, bytes], None]) -> None:
        self.cb = f

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self._will = (topic, bytes(msg), bool(retain), qos)

    def connect(self, clean_session: bool = True) -> bool:
        """Connect and wait for CONNACK; returns the session-present flag."""
        self.close()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        c.connect_timeout = self.timeout
        if self.user is not None:
            c.username_pw_set(self.user, self.pswd)
        if self.ssl is not None:
            c.tls_set_context(self.ssl)
        if self._will is not None:
            topic, msg, retain, qos = self._will
            c.will_set(topic, msg, qos=qos, retain=retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._paho = c
        self._connack = None
        self._lost = False
        try:
            c.connect(self.server, self.port, keepalive=self.keepalive or 60)
        except OSError as err:  # refused, unreachable, DNS, TLS handshake
            self.close()
            raise MQTTError("connect to %s:%d: %s" % (self.server, self.port, err)) from err
        self._wait(lambda: self._connack is not None, "CONNACK")
        rc, present = self._connack
        if rc.is_failure:
            self.close()
            raise MQTTError("broker refused the connection: %s" % rc)
        return bool(present)

    def subscribe(self, topic: str, qos: int = 0) -> None:
        c = self._client()
        result, mid = c.subscribe(topic, qos)
        self._check(result)
        if mid is None:
            raise MQTTError("subscription to %s not sent" % topic)
        self._wait(lambda: mid in self._subacks, "SUBACK")
        codes = self._subacks.pop(mid)
        if any(code.is_failure for code in codes):
            raise MQTTError("subscription to %s refused" % topic)

    def publish(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        c = self._client()
        info = c.publish(topic, bytes(msg), qos=qos, retain=retain)
        self._check(info.rc)
        self.packets_out += 1
        if qos:
            self._wait(info.is_published, "PUBACK")

    def check_msg(self) -> int | None:
        """Run the network loop once without waiting; deliver one message if any."""
        if not self._inbox:
            self._loop(0.0)
        if self._inbox:
            topic, msg = self._inbox.popleft()
            if self.cb is not None:
                self.cb(topic, msg)
            return 0x30
        return None

    def wait_msg(self) -> int | None:
        if not self._inbox:
            self._loop(self.timeout)
        return self.check_msg()

    def ping(self) -> None:
        # paho keeps the keepalive itself whenever its loop runs; run it now.
        c = self._client()
        self._check(c.loop_misc())
        self._loop(0.0)

    def disconnect(self) -> None:
        """Clean DISCONNECT: the broker discards the will."""
        c = self._paho
        if c is None:
            return
        try:
            c.disconnect()
            c.loop_write()
        finally:
            self.close()

    def close(self) -> None:
        """Drop the TCP connection without DISCONNECT (the will fires). Never raises."""
        c, self._paho = self._paho, None
        if c is None:
            return
        sock = c.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # -- internals
    def _client(self) -> mqtt.Client:
        if self._paho is None or self._lost:
            self.close()
            raise MQTTError("not connected")
        return self._paho

    def _check(self, rc: int) -> None:
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self.close()
            raise MQTTError("connection lost (%s)" % mqtt.error_string(rc))

    def _loop(self, timeout: float) -> None:
        """paho's ``loop()`` without its ``select()`` and wake-up socket pair.

        ``select`` fails for descriptors above 1024 and paho's loop opens two
        extra sockets per client, while a fleet process holds a thousand
        clients (``firmware_sim.fleet``); ``poll`` has neither limit.
        """
        c = self._client()
        sock = c.socket()
        if sock is None:
            self.close()
            raise MQTTError("connection lost")
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        poller = select.poll()
        poller.register(sock, select.POLLIN | (select.POLLOUT if c.want_write() else 0))
        ready = poller.poll(0 if pending else int(timeout * 1000))
        events = ready[0][1] if ready else 0
        if pending or events & (select.POLLIN | select.POLLERR | select.POLLHUP):
            self._check(c.loop_read())
        if c.want_write():
            self._check(c.loop_write())
        self._check(c.loop_misc())
        if self._lost:
            self.close()
            raise MQTTError("connection lost")

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise MQTTError("no %s within %.1f s" % (what, self.timeout))
            self._loop(min(left, 0.5))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connack = (rc, flags.session_present)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._lost = True

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.append((msg.topic.encode(), bytes(msg.payload)))

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, codes: list[Any], props: Any
    ) -> None:
        self._subacks[mid] = codes


# -- the HAL ----------------------------------------------------------------------


class NoWatchdog:
    """A host has no hardware watchdog; the process supervisor is the backstop."""

    def __init__(self) -> None:
        self.feeds = 0

    def feed(self) -> None:
        self.feeds += 1


class HostHal:
    """The HAL of a virtual terminal.

    ``sensors``: ``--sensors`` value (tty path, ``tcp://host:port``, None);
    ``ca``: CA file trusted for a TLS broker (None: the system's CAs);
    ``timeout``: MQTT wait limit in seconds; ``seed``: jitter randomness
    (None: from the OS).
    """

    rtc_epoch = 1970

    def __init__(  # noqa: PLR0917
        self,
        sensors: str | None = None,
        ca: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        seed: int | None = None,
        clock_offset: int = 0,
        power_cut_at: int | None = None,
    ) -> None:
        self.sensors = sensors
        self.ca = ca
        self.timeout = timeout
        self._rng = _random.Random(seed)
        self.resets = 0
        # Test faults (HIL suite): an RTC that is ``clock_offset`` seconds
        # wrong, and a power cut in the middle of the ``power_cut_at``-th
        # record appended to the outbox (see :meth:`outbox_crash`).
        self.clock_offset = clock_offset
        self.power_cut_at = power_cut_at
        self.appends = 0
        self.power_cut = False

    @staticmethod
    def ticks_ms() -> int:
        return time.monotonic_ns() // 1000000

    @staticmethod
    def ticks_diff(a: int, b: int) -> int:
        return a - b

    @staticmethod
    def sleep_ms(ms: int) -> None:
        if ms > 0:
            time.sleep(ms / 1000)

    def rtc(self) -> int:
        return int(time.time()) + self.clock_offset

    def set_rtc(self, unix: int) -> None:
        """The host clock belongs to the operating system: left alone."""

    def open_link(self, bus: dict[str, Any]) -> Link:
        return open_sensors(self.sensors, bus)

    def mqtt_client(
        self, client_id: str, broker: dict[str, Any], credentials: dict[str, Any], keepalive: int
    ) -> HostMQTTClient:
        ctx = ssl.create_default_context(cafile=self.ca) if broker["tls"] else None
        return HostMQTTClient(
            client_id,
            broker["host"],
            broker["port"],
            credentials["username"],
            credentials["password"],
            keepalive,
            ctx,
            timeout=self.timeout,
        )

    @staticmethod
    def network_up() -> bool:
        return True

    @staticmethod
    def ntp_time(server: str) -> float:
        # The operating system disciplines the host clock (its own NTP client).
        return time.time()

    @staticmethod
    def watchdog(timeout_ms: int) -> NoWatchdog:
        return NoWatchdog()

    @staticmethod
    def mem_free() -> int:
        return 0  # no meaningful free heap on a host

    @staticmethod
    def rssi() -> int | None:
        return None

    def random(self, n: int) -> int:
        return self._rng.randrange(n) if n > 0 else 0

    def outbox_crash(self, op: str, name: str, size: int) -> int | None:
        """The outbox's ``crash`` hook: with ``power_cut_at`` = N, the N-th
        record appended to a segment gets half its bytes onto flash, then the
        outbox raises PowerCut and :attr:`power_cut` tells the caller to die
        without running another line (``python -m edge.host`` exits 137)."""
        if self.power_cut_at is None or op != "write" or not name.endswith(".seg"):
            return None
        self.appends += 1
        if self.appends != self.power_cut_at:
            return None
        self.power_cut = True
        return size // 2

    def reset(self) -> None:
        self.resets += 1
        raise Reboot()
