"""A real mosquitto for tests, configured exactly as the project ships it.

:class:`MosquittoBroker` renders the config with :mod:`cloud.broker` into a
temporary directory, makes a throw-away test CA and server certificate with
the ``openssl`` command (never committed), starts its own ``mosquitto`` on
free loopback ports and stops it afterwards. It never touches port 1883 or
the system broker. Two listeners, as the project ships them:

- ``terminal``: terminal accounts in the dynamic-security plugin, plain TCP
  (virtual terminals on one host); with ``tls=True`` it is TLS instead (what
  terminals use in the field) and named ``terminal_tls``. The plugin serves
  one listener only, hence one or the other per broker.
- ``service``: cloud service accounts (password file), plain TCP

Terminal accounts given to the constructor seed the plugin's file; an admin
account (``mimamori.admin``, random password in :attr:`admin_password`) is
always added, so tests change accounts at run time with :meth:`control`,
exactly as the cloud's reconciler does.

Usage in a test module::

    @pytest.fixture(scope="module")
    def broker(tmp_path_factory):
        with MosquittoBroker(tmp_path_factory.mktemp("mqtt"), ACCOUNTS) as b:
            yield b

:class:`Client` is a small synchronous wrapper around paho-mqtt 2.x that
waits on events (CONNACK, SUBACK, PUBACK, messages) with deadlines, so tests
never sleep to synchronise. A missing ``mosquitto`` or ``openssl`` raises
:class:`BrokerUnavailable` with the command that installs it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.broker import (
    Account,
    BrokerSettings,
    Listener,
    ListenerKind,
    RenderedConfig,
    Role,
    TlsFiles,
    account_from_row,
    new_secret,
    render_directory,
    write_accounts,
)
from cloud.broker.control import DynsecControl
from cloud.broker.dynsec import ADMIN_USERNAME
from cloud.demo.procs import free_port

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
MQTTv5 = MQTTProtocolVersion.MQTTv5
MQTTv311 = MQTTProtocolVersion.MQTTv311


class BrokerUnavailable(RuntimeError):
    """mosquitto or openssl is missing, or the broker would not start."""


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise BrokerUnavailable(f"{name} not found; install it with: apt-get install -y {package}")
    return path


# --------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class TestPki:
    ca: Path
    cert: Path
    key: Path
    wrong_ca: Path  # a second CA that did not sign the server certificate

    __test__ = False  # not a pytest test class despite the name


def make_pki(directory: Path) -> TestPki:
    """Make a test CA, a server cert for 127.0.0.1/localhost, and an unrelated CA.

    EC P-256 keys, valid two days. Uses the ``openssl`` command line.
    """
    openssl = require_tool("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        result = subprocess.run(
            [openssl, *args], cwd=directory, capture_output=True, text=True, check=False, timeout=60
        )
        if result.returncode != 0:
            raise BrokerUnavailable(f"openssl {args[0]} failed: {result.stderr.strip()}")

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for name in ("ca", "wrong-ca"):
        run(
            "req",
            "-x509",
            *ec,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN=mimamori test {name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    )
    return TestPki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "wrong-ca.pem",
    )


# ------------------------------------------------------------------------ broker


class MosquittoBroker:
    """Own mosquitto instance with the project's rendered config.

    ``start()`` returns once the broker is running and every listener answers
    (TLS ones with a full handshake), or raises BrokerUnavailable with the
    broker's log. ``restart()`` keeps ports and the persistence directory
    (the plugin's accounts with it); ``wipe()`` empties it.
    ``reload(accounts)`` rewrites the service password file and sends SIGHUP
    (the caller polls for the effect).
    """

    def __init__(
        self, workdir: Path, accounts: Iterable[Account], *, tls: bool = False, **settings: Any
    ) -> None:
        self.workdir = workdir
        self.admin_password = new_secret()
        self.accounts = [
            *(a for a in accounts if a.role is not Role.ADMIN),
            account_from_row(ADMIN_USERNAME, self.admin_password, Role.ADMIN),
        ]
        self.tls = tls
        self.terminal_listener = "terminal_tls" if tls else "terminal"
        self.extra_settings = settings
        self.pki: TestPki | None = None
        self.files: RenderedConfig | None = None
        self.ports: dict[str, int] = {}
        self.log_path = workdir / "mosquitto.log"
        self.data_dir = workdir / "data"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle
    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        mosquitto = require_tool("mosquitto", "mosquitto")
        if self.pki is None:
            self.pki = make_pki(self.workdir / "pki")
        # A port picked free may be taken before mosquitto binds it; retry with
        # fresh ports a few times instead of failing on that race.
        for attempt in range(3):
            if not self.ports or attempt > 0:
                self.ports = {name: free_port() for name in (self.terminal_listener, "service")}
            self._render()
            if self._launch(mosquitto):
                return
        raise BrokerUnavailable(f"mosquitto would not start:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its store on a clean stop), then wait."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc)

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self, accounts: Iterable[Account]) -> None:
        """New service accounts take effect without a restart: rewrite, SIGHUP."""
        assert self.files is not None and self._proc is not None
        write_accounts(self.files, accounts)
        self._proc.send_signal(signal.SIGHUP)

    def wipe(self) -> None:
        """Stop, forget every account and queued message (a replaced broker),
        keep only the admin account; start again on the same ports."""
        self.stop()
        shutil.rmtree(self.data_dir)
        self.accounts = [a for a in self.accounts if a.role is not Role.TERMINAL]
        self.start()

    def control(self, timeout_s: float = 10.0) -> DynsecControl:
        """An admin session on the terminal listener (close it, or use ``with``)."""
        return DynsecControl(
            HOST,
            self.ports[self.terminal_listener],
            self.admin_password,
            tls_ca=self.pki.ca if self.tls and self.pki else None,
            timeout_s=timeout_s,
        )

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 10.0, after: int = 0) -> None:
        """Wait until ``text`` appears in the log past offset ``after``."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text()[after:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in broker log:\n{self.log_tail()}")
            time.sleep(0.02)

    # -- clients
    def client(
        self, listener: str, username: str | None, password: str | None, **kwargs: Any
    ) -> Client:
        """A :class:`Client` for one of the listeners, not yet connected."""
        tls_ca = kwargs.pop("tls_ca", None)
        if listener == "terminal_tls" and tls_ca is None:
            assert self.pki is not None
            tls_ca = self.pki.ca
        return Client(HOST, self.ports[listener], username, password, tls_ca=tls_ca, **kwargs)

    # -- internals
    def _render(self) -> None:
        assert self.pki is not None
        settings = BrokerSettings(
            listeners=(
                Listener(
                    ListenerKind.TERMINAL, self.ports[self.terminal_listener], HOST, tls=self.tls
                ),
                Listener(ListenerKind.SERVICE, self.ports["service"], HOST),
            ),
            data_dir=self.data_dir,
            tls=TlsFiles(self.pki.ca, self.pki.cert, self.pki.key),
            log_file=self.log_path,
            # Running as root, mosquitto would switch to the "mosquitto" user and
            # lose access to this temporary directory; stay the current user.
            user=current_user(),
            **self.extra_settings,
        )
        self.files = render_directory(self.workdir / "conf", self.accounts, settings)

    def _launch(self, mosquitto: str) -> bool:
        assert self.files is not None and self.pki is not None
        terminal = self.ports[self.terminal_listener]
        try:
            self._proc = launch(
                mosquitto,
                self.files.conf,
                self.log_path,
                plain=[self.ports["service"]] + ([] if self.tls else [terminal]),
                tls={terminal: self.pki.ca} if self.tls else None,
            )
        except PortTaken:
            return False
        return True


class PortTaken(BrokerUnavailable):
    """A listener port was taken between picking it and mosquitto binding it."""


def launch(
    mosquitto: str,
    conf: Path,
    log_path: Path,
    plain: Iterable[int],
    tls: dict[int, Path] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``mosquitto -c conf`` and wait until every listener answers.

    The log must say the broker is running, plain ports must accept a TCP
    connection and TLS ports must complete a TLS handshake with the given CA
    (so certificates are loaded, and the probe leaves no "failed" TLS lines
    in the log). Raises PortTaken when
    mosquitto exits because a port is in use, BrokerUnavailable for any other
    early exit or when it is not listening within START_TIMEOUT.
    """
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    # Errors before the config is read (bad option, unreadable file) go to
    # stderr, not to the log file; keep them in a file, a pipe could fill up.
    stderr_path = log_path.with_suffix(".stderr")
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr, cwd=conf.parent
        )
    pending: dict[int, Path | None] = dict.fromkeys(plain)
    pending.update(tls or {})
    deadline = time.monotonic() + START_TIMEOUT
    # "running" is logged once every listener is open; the probes make sure
    # the ports answering are this broker's and not a stranger's.
    while pending or " running" not in _read_from(log_path, log_offset):
        if proc.poll() is not None:
            err = _read_from(stderr_path, 0)
            log = _read_from(log_path, log_offset)
            if "Address already in use" in log + err:
                raise PortTaken(log)
            raise BrokerUnavailable(f"mosquitto exited at start:\n{err}{log}")
        if time.monotonic() > deadline:
            terminate(proc)
            raise BrokerUnavailable(
                f"mosquitto not listening on {sorted(pending)}:\n{_read_from(log_path, log_offset)}"
            )
        for port, ca in list(pending.items()):
            if _answers(port, ca):
                del pending[port]
        time.sleep(0.02)
    return proc


def _answers(port: int, ca: Path | None) -> bool:
    try:
        with socket.create_connection((HOST, port), 0.5) as sock:
            if ca is not None:
                with tls_context(ca).wrap_socket(sock, server_hostname=HOST):
                    pass
    except OSError:  # ssl.SSLError is an OSError
        return False
    return True


def terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


# ------------------------------------------------------------------------ client


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Client:
    """paho-mqtt 2.x client driven synchronously with events and deadlines.

    Every wait raises AssertionError on timeout, naming what did not come.
    ``connect()`` returns the CONNACK reason code instead of raising, so tests
    can assert refusals; a refused client is stopped and not retried.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        *,
        client_id: str = "",
        protocol: MQTTProtocolVersion = MQTTv5,
        tls_ca: Path | None = None,
        clean: bool = True,
        session_expiry: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.protocol = host, port, protocol
        self.timeout = timeout
        self.clean = clean
        self.session_expiry = session_expiry
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
        if protocol != MQTTv5:
            kwargs["clean_session"] = clean
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if username is not None:
            self.mqtt.username_pw_set(username, password)
        if tls_ca is not None:
            self.mqtt.tls_set(ca_certs=str(tls_ca))
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connack: ReasonCode | None = None
        self.connack_props: Properties | None = None
        self.session_present = False
        self.disconnect_reason: ReasonCode | None = None
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._acks: dict[int, Any] = {}
        self._cond = threading.Condition()
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_message = self._on_message
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.on_publish = self._on_publish
        self._loop = False

    # -- callbacks (paho's network thread)
    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        self.connack, self.connack_props = rc, props
        self.session_present = bool(flags.session_present)
        if rc.is_failure:
            # Do not let paho's loop reconnect with the same refused credentials.
            client.disconnect()
        self._connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        self.disconnect_reason = rc
        # One connection per Client: paho would otherwise reconnect and resend
        # in-flight messages, hiding what the broker did. Tests that resume a
        # session make a new Client.
        client.disconnect()
        self._disconnected.set()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))

    def _on_subscribe(
        self,
        client: Any,
        userdata: Any,
        mid: int,
        codes: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        with self._cond:
            self._acks[mid] = list(codes)
            self._cond.notify_all()

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, rc: ReasonCode, props: Properties | None
    ) -> None:
        with self._cond:
            self._acks[mid] = rc
            self._cond.notify_all()

    def _wait_ack(self, mid: int, what: str) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._acks, self.timeout):
                raise AssertionError(f"no {what} within {self.timeout} s")
            return self._acks.pop(mid)

    # -- operations
    def connect(self, will: tuple[str, bytes] | None = None) -> ReasonCode:
        """Connect and wait for CONNACK (or the broker closing the socket)."""
        if will is not None:
            self.mqtt.will_set(will[0], will[1], qos=1)
        props = None
        if self.protocol == MQTTv5 and self.session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
        kwargs: dict[str, Any] = {"keepalive": 30, "properties": props}
        if self.protocol == MQTTv5:
            kwargs["clean_start"] = self.clean
        self.mqtt.connect(self.host, self.port, **kwargs)
        self.mqtt.loop_start()
        self._loop = True
        deadline = time.monotonic() + self.timeout
        while not self._connected.is_set():
            if self._disconnected.is_set():
                break  # closed without CONNACK
            if time.monotonic() > deadline:
                raise AssertionError(f"no CONNACK from {self.host}:{self.port}")
            self._connected.wait(0.05)
        if self.connack is None:
            raise ConnectionError(f"closed before CONNACK: {self.disconnect_reason}")
        return self.connack

    def connect_ok(self, will: tuple[str, bytes] | None = None) -> Client:
        rc = self.connect(will)
        assert not rc.is_failure, f"connect refused: {rc}"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        result, mid = self.mqtt.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None, f"not sent: {result}"
        codes: list[ReasonCode] = self._wait_ack(mid, f"SUBACK for {topic}")
        return codes

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> ReasonCode | None:
        """Publish; for QoS 1 wait for PUBACK and return its reason code."""
        info = self.mqtt.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish not sent: {info.rc}"
        if qos == 0:
            return None
        rc: ReasonCode = self._wait_ack(info.mid, f"PUBACK for {topic}")
        return rc

    def expect(self, timeout: float | None = None) -> Received:
        try:
            return self.messages.get(timeout=self.timeout if timeout is None else timeout)
        except queue.Empty:
            raise AssertionError("no message arrived before the deadline") from None

    def expect_until(self, payload: bytes, timeout: float | None = None) -> list[Received]:
        """Messages received up to and including one with ``payload`` (a sentinel)."""
        seen: list[Received] = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"sentinel {payload!r} not received; got {seen}")
            msg = self.expect(remaining)
            seen.append(msg)
            if msg.payload == payload:
                return seen

    def wait_disconnected(self, timeout: float | None = None) -> ReasonCode | None:
        if not self._disconnected.wait(self.timeout if timeout is None else timeout):
            raise AssertionError("client was not disconnected before the deadline")
        return self.disconnect_reason

    def drop_link(self) -> None:
        """Cut the TCP connection without DISCONNECT, as a lost cellular link does
        (the broker then publishes the client's will)."""
        sock = self.mqtt.socket()
        assert isinstance(sock, socket.socket), "not connected over TCP"
        sock.shutdown(socket.SHUT_RDWR)
        self.wait_disconnected()

    @property
    def is_connected(self) -> bool:
        return self.mqtt.is_connected()

    def close(self) -> None:
        if self._loop:
            self.mqtt.disconnect()
            self.mqtt.loop_stop()
            self._loop = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tls_context(ca: Path) -> ssl.SSLContext:
    """A client TLS context trusting only ``ca`` (hostname checked)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx


@contextlib.contextmanager
def connected(
    broker: MosquittoBroker, listener: str, username: str, password: str, **kwargs: Any
) -> Iterator[Client]:
    """A connected client that is closed afterwards."""
    client = broker.client(listener, username, password, **kwargs)
    try:
        client.connect_ok()
        yield client
    finally:
        client.close()
