"""Board HAL: the terminal's hardware on an ESP32-class MicroPython board.

The only module that touches ``machine`` (UART, the RS-485 driver-enable
pin, RTC, WDT, reset), ``network``, ``ntptime`` and ``umqtt.simple``. It is
imported by :func:`edge.agent.run` only; nothing here runs at import time.

Board wiring and network settings live in ``board.json`` beside
``site.json`` (optional; the site file's schema belongs to the agent)::

    {"uart": {"id": 2, "tx": 17, "rx": 16, "de": 4},   # de: DE/RE pin, null if
                                                       # the transceiver switches itself
     "wlan": {"ssid": "...", "password": "..."},       # absent: boot.py brings up
                                                       # the network (LAN, PPP)
     "wlan_wait": 10,                                  # seconds the first network_up
                                                       # waits for the link at boot
     "ca": "ca.pem",                                   # CA file for a TLS broker
     "mqtt_timeout": 10}                               # seconds per MQTT wait

``mimamori-install flash --board-config --ca`` puts both files there.
Waiting for the link at boot (bounded) lets the agent set its clock by NTP
before its birth frame: otherwise every boot would start with frames flagged
unsynchronised and the cloud would raise (and mail) a clock alarm.

Blocking calls are bounded where the libraries allow (socket timeouts on
the MQTT socket, ``ntptime.timeout``, the UART read loop); where they do not
(umqtt < 1.4's TCP connect, a truncated packet inside ``check_msg``) the
hardware watchdog the agent feeds is the backstop. With TLS the timeout is
set on the TCP socket under it: an ESP32's SSLSocket has no ``settimeout``.
"""

import gc
import json
import time

EPOCH_2000 = 946684800
_DEFAULTS = {
    "uart": {"id": 2, "tx": 17, "rx": 16, "de": 4},
    "wlan": None,
    "wlan_wait": 10,
    "ca": "ca.pem",
    "mqtt_timeout": 10,
}
_WLAN_RETRY_MS = 30000


def _settings(path):
    out = dict(_DEFAULTS)
    try:
        with open(path) as f:
            given = json.load(f)
    except (OSError, ValueError):
        return out
    if isinstance(given, dict):
        for key in _DEFAULTS:
            if key in given:
                out[key] = given[key]
    return out


class UartLink:
    """RS-485 half duplex on ``machine.UART`` with a driver-enable pin.

    ``write`` raises DE, sends, waits until the last stop bit has left the
    shift register (``txdone``), then releases the line so the slave's reply
    is not missed. Implements :class:`edge.link.Link`.
    """

    def __init__(self, pins, bus):
        from machine import UART, Pin

        de = pins.get("de")
        self._de = Pin(de, Pin.OUT, value=0) if de is not None else None
        parity = bus["parity"]
        par = None if parity == "N" else (0 if parity == "E" else 1)
        baud = bus["baud"]
        self._uart = UART(
            pins.get("id", 2),
            baudrate=baud,
            bits=8,
            parity=par,
            stop=bus["stop"],
            tx=pins.get("tx"),
            rx=pins.get("rx"),
            timeout=0,
            rxbuf=512,
        )
        self._char_us = 11000000 // baud + 1

    def write(self, buf):
        uart = self._uart
        de = self._de
        if de is not None:
            de.value(1)
        try:
            uart.write(buf)
            limit = (len(buf) * self._char_us) // 1000 + 20
            t0 = time.ticks_ms()
            while not uart.txdone():
                if time.ticks_diff(time.ticks_ms(), t0) > limit:
                    raise OSError("uart: transmit did not complete")
        finally:
            if de is not None:
                de.value(0)

    def read(self, n, timeout_ms):
        uart = self._uart
        out = b""
        t0 = time.ticks_ms()
        while len(out) < n:
            k = uart.any()
            if k:
                chunk = uart.read(k if k < n - len(out) else n - len(out))
                if chunk:
                    out += chunk
                    continue
            if time.ticks_diff(time.ticks_ms(), t0) >= timeout_ms:
                break
            time.sleep_ms(1)
        return out

    def flush_input(self):
        uart = self._uart
        while uart.any():
            uart.read()


class _Tls:
    """What umqtt.simple is given for TLS: wraps its TCP socket with ``ctx``,
    verifying the broker's name, and keeps that socket, whose timeout bounds
    the TLS reads and writes.

    umqtt.simple >= 1.4 calls ``ssl.wrap_socket(sock, server_hostname=...)``
    on the object passed as ``ssl``; 1.3.x (the PyPI release) does ``import
    ussl; ussl.wrap_socket(sock, **ssl_params)``, which is why the board MQTT
    client registers this object as ``ussl`` (MicroPython >= 1.22 has no
    such module, and an old firmware's would not verify the broker).
    """

    def __init__(self, ctx, hostname):
        self.ctx = ctx
        self.hostname = hostname
        self.raw = None

    def wrap_socket(self, sock, server_hostname=None, **kw):
        self.raw = sock
        return self.ctx.wrap_socket(sock, server_hostname=server_hostname or self.hostname)


class BoardMQTT:
    """umqtt.simple's client with bounded waits and one failure type.

    Every failure (socket error or timeout, refused CONNACK, umqtt's
    assertion and index errors on a broken stream) is raised as ``OSError``
    and closes the socket; ``close`` drops the connection without
    DISCONNECT, so the broker publishes the will. Downlink reaches the
    callback from ``check_msg`` and from inside ``publish`` (umqtt reads any
    PUBLISH while it waits for the PUBACK), QoS 0 (the cloud's acks) as well
    as QoS 1 (config, commands; umqtt answers those with a PUBACK).
    """

    def __init__(self, client_id, host, port, user, password, keepalive, ssl_ctx, timeout_s):  # noqa: PLR0917
        from umqtt.simple import MQTTClient

        self._tls = _Tls(ssl_ctx, host) if ssl_ctx is not None else None
        params = {"server_hostname": host} if ssl_ctx is not None else {}
        self._c = MQTTClient(
            client_id, host, port, user, password, keepalive, ssl=self._tls, ssl_params=params
        )
        self._timeout = timeout_s

    def _call(self, fn, *args):
        problem = None
        try:
            return fn(*args)
        except OSError:
            self.close()
            raise
        except Exception as err:  # umqtt signals protocol trouble with asserts and indexing
            problem = repr(err)
        self.close()
        raise OSError("mqtt: " + problem)

    def _bound(self):
        sock = self._c.sock
        if sock is not None:
            tls = self._tls
            (tls.raw if tls is not None and tls.raw is not None else sock).settimeout(self._timeout)

    def set_callback(self, f):
        self._c.set_callback(f)

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self._c.set_last_will(topic, msg, retain, qos)

    def connect(self, clean_session=True):
        result = self._call(self._connect, clean_session)
        self._bound()
        return result

    def _connect(self, clean_session):
        if self._tls is not None:
            import sys

            self._tls.raw = None
            sys.modules["ussl"] = self._tls  # type: ignore[assignment]  # umqtt.simple < 1.4 imports it (see _Tls)
        try:
            return self._c.connect(clean_session, self._timeout)  # umqtt.simple >= 1.4
        except TypeError:
            return self._c.connect(clean_session)

    def subscribe(self, topic, qos=0):
        self._bound()
        self._call(self._c.subscribe, topic, qos)

    def publish(self, topic, msg, retain=False, qos=0):
        self._bound()  # check_msg leaves the socket blocking without a timeout
        self._call(self._c.publish, topic, msg, retain, qos)

    def check_msg(self):
        return self._call(self._c.check_msg)

    def ping(self):
        self._bound()
        self._call(self._c.ping)

    def disconnect(self):
        self._call(self._c.disconnect)

    def close(self):
        sock = self._c.sock
        self._c.sock = None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class _Watchdog:
    def __init__(self, timeout_ms):
        from machine import WDT

        self._wdt = WDT(timeout=timeout_ms)

    def feed(self):
        self._wdt.feed()


class BoardHal:
    """The HAL of a real terminal; ``state_dir`` is where ``site.json`` lives."""

    def __init__(self, state_dir=""):
        self.dir = state_dir.rstrip("/")
        self.settings = _settings(self._path("board.json"))
        # Ports differ in their epoch (2000 on ESP32 so far, 1970 on newer ones).
        self.rtc_epoch = 2000 if time.gmtime(0)[0] == 2000 else 1970
        self._wlan = None
        self._wlan_try = None
        self.ticks_ms = time.ticks_ms
        self.ticks_diff = time.ticks_diff
        self.sleep_ms = time.sleep_ms

    def _path(self, name):
        return self.dir + "/" + name if self.dir else name

    # -- clock
    def rtc(self):
        return time.time()

    def set_rtc(self, unix):
        from machine import RTC

        shift = EPOCH_2000 if self.rtc_epoch == 2000 else 0
        t = time.gmtime(unix - shift)
        RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))

    def ntp_time(self, server):
        import ntptime

        ntptime.host = server
        ntptime.timeout = 2
        problem = None
        try:
            t = ntptime.time()  # seconds since the port's epoch
        except OSError:
            raise
        except Exception as err:  # a malformed answer
            problem = repr(err)
        if problem is not None:
            raise OSError("ntp: " + problem)
        return t + (EPOCH_2000 if self.rtc_epoch == 2000 else 0)

    # -- sensors
    def open_link(self, bus):
        return UartLink(self.settings["uart"], bus)

    # -- network
    def network_up(self):
        wlan_cfg = self.settings["wlan"]
        if not wlan_cfg:
            return True  # brought up by boot.py (LAN, PPP)
        import network

        wlan = self._wlan
        first = wlan is None
        if wlan is None:
            wlan = self._wlan = network.WLAN(network.STA_IF)
            wlan.active(True)
        if wlan.isconnected():
            return True
        now = time.ticks_ms()
        if self._wlan_try is None or time.ticks_diff(now, self._wlan_try) > _WLAN_RETRY_MS:
            self._wlan_try = now
            try:
                wlan.connect(wlan_cfg["ssid"], wlan_cfg.get("password", ""))
            except OSError:
                pass
        if first:  # at boot: give the link a moment, so NTP can run before the birth
            wait_ms = int(self.settings["wlan_wait"] * 1000)
            while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), now) < wait_ms:
                time.sleep_ms(50)
            return wlan.isconnected()
        return False

    def rssi(self):
        if self._wlan is None:
            return None
        try:
            return self._wlan.status("rssi")
        except (OSError, ValueError):
            return None

    def mqtt_client(self, client_id, broker, credentials, keepalive):
        ctx = None
        if broker["tls"]:
            import ssl

            # Verified always: without a "ca" in board.json the handshake fails
            # (and is counted) rather than trusting any server.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined,unused-ignore]
            ca = self.settings["ca"]
            if ca:
                try:
                    ctx.load_verify_locations(cafile=self._path(ca))
                except OSError:
                    pass  # no CA file: the handshake will fail verification
        return BoardMQTT(
            client_id,
            broker["host"],
            broker["port"],
            credentials["username"],
            credentials["password"],
            keepalive,
            ctx,
            self.settings["mqtt_timeout"],
        )

    # -- system
    def watchdog(self, timeout_ms):
        return _Watchdog(timeout_ms)

    def mem_free(self):
        gc.collect()
        return gc.mem_free()  # type: ignore[attr-defined,unused-ignore]  # MicroPython only

    def random(self, n):
        import random

        return random.getrandbits(30) % n if n > 0 else 0

    def reset(self):
        from machine import reset

        reset()
