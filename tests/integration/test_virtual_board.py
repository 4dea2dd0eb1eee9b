"""The virtual board's modules behave as the ESP32 port's, against real parts.

Each test runs code on the board through its raw REPL (the installer's
:class:`edge.installer.board.Board`, i.e. mpremote) and checks what a terminal
would see: bytes on a real pty paced at the baud rate with the RS-485 enable
pin around them, real TCP with the ESP32's errno values, TLS to the project's
Mosquitto verified against its CA, SNTP from a responder, the watchdog, a
power cut in the middle of a flash write, and Ctrl-C stopping main.py.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from cloud.broker import account_from_row
from edge.installer.board import Board
from edge.installer.errors import BoardError
from firmware_sim.sntp import SntpServer
from tests.support.broker import HOST, MosquittoBroker
from tests.support.virtual_board import VirtualBoard

pytestmark = pytest.mark.integration

WLAN = "bench:secret"
JOIN = (
    "import network, time\n"
    "w = network.WLAN(network.STA_IF)\n"
    "w.active(True)\n"
    "w.connect('bench', 'secret')\n"
    "while not w.isconnected():\n"
    "    time.sleep_ms(50)\n"
)


def run(board: VirtualBoard, code: str) -> str:
    with Board(board.port, timeout=10) as b:
        return b.exec(code)


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """The device side of a serial line (master fd) and the path the board opens."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        os.close(master)
        os.close(slave)


def test_uart_paced_at_baud_rate_with_driver_enable_around_each_frame(
    tmp_path: Path, pty_pair: tuple[int, str]
) -> None:
    master, path = pty_pair
    with VirtualBoard(tmp_path / "flash", run_main=False, uarts={2: path}) as board:
        out = run(
            board,
            "from machine import UART, Pin\n"
            "import time\n"
            "de = Pin(4, Pin.OUT, value=0)\n"
            "u = UART(2, baudrate=9600, bits=8, parity=None, stop=1, timeout=0, rxbuf=512)\n"
            "print(u.read(4), u.any())\n"  # nothing there: None, as on the board
            "de.value(1)\n"
            "t0 = time.ticks_ms()\n"
            "print(u.write(bytes(range(48))), u.txdone())\n"
            "while not u.txdone():\n"
            "    time.sleep_ms(1)\n"
            "print(time.ticks_diff(time.ticks_ms(), t0))\n"
            "de.value(0)\n",
        )
        first, written, elapsed = out.splitlines()
        assert first == "None 0"
        assert written == "48 False"  # write returns at once, the wire takes its time
        assert 45 <= int(elapsed) <= 120  # 48 characters of 10 bits at 9600 baud: 50 ms
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 48 and time.monotonic() < deadline:
            got += os.read(master, 64)
        assert got == bytes(range(48))

        log = board.control(cmd="log")
        (t0, t1, n), *_ = log["uart"]["2"]["tx"]
        assert n == 48 and 49 <= t1 - t0 <= 51
        de = [(t, v) for t, pin, v in log["pins"] if pin == 4]
        raised = max(t for t, v in de if v == 1 and t <= t0)
        released = min(t for t, v in de if v == 0 and t >= raised)
        assert raised <= t0 and released >= t1  # driver on for the whole frame, off after it

        # a reply arrives at the baud rate too: any() grows, read(n) waits for it
        boots = board.control(cmd="status")["boots"]

        def answer() -> None:  # once the next boot's UART listens (before, bytes are lost)
            deadline = time.monotonic() + 20
            while True:
                status = board.control(cmd="status")
                if status["boots"] > boots and status["uarts"]["2"]["enabled"]:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.02)
            os.write(master, bytes(range(100, 120)))

        reply = threading.Thread(target=answer)
        reply.start()
        out = run(
            board,
            "from machine import UART\n"
            "import time\n"
            "u = UART(2, baudrate=9600, timeout=3000, timeout_char=40)\n"
            "first = u.read(1)\n"  # waits for the reply's first byte
            "n0 = u.any()\n"
            "time.sleep_ms(6)\n"
            "print(first, n0 < u.any(), u.read(30), u.read(1))\n",
        )
        reply.join()
        assert out.strip() == "b'd' True %r None" % bytes(range(101, 120))


class EchoServer:
    """Echoes what it gets, except that it never answers the first message of
    a connection starting with b'slow'."""

    def __init__(self) -> None:
        self.server = socket.create_server((HOST, 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                if not data.startswith(b"slow"):
                    conn.sendall(data)


def test_socket_blocking_timeouts_and_esp32_errnos(tmp_path: Path) -> None:
    echo = EchoServer()
    refused = socket.socket()
    refused.bind((HOST, 0))  # held, never listening: connections are refused
    try:
        with VirtualBoard(tmp_path / "flash", run_main=False, wlan=[WLAN]) as board:
            out = run(
                board,
                "import socket, time\n"
                "def err(f):\n"
                "    try:\n"
                "        f()\n"
                "    except OSError as e:\n"
                "        return e.errno if e.errno is not None else e.args[0]\n"
                "def conn(port):\n"
                "    s = socket.socket(); s.connect(('127.0.0.1', port)); return s\n"
                "print(err(lambda: conn(%d)))\n"
                % echo.port  # no network yet
                + JOIN
                + "s = conn(%d)\n" % echo.port
                + "s.write(b'hello'); print(s.read(5))\n"
                "s.settimeout(0.3); s.write(b'slow')\n"
                "t0 = time.ticks_ms(); e = err(lambda: s.read(4))\n"
                "print(e, 250 <= time.ticks_diff(time.ticks_ms(), t0) < 1000)\n"
                "s.setblocking(False); print(s.read(4), err(lambda: s.recv(4)))\n"
                "s.close()\n"
                "print(err(lambda: conn(%d)))\n"
                % refused.getsockname()[1]
                + "print(err(lambda: socket.getaddrinfo('nowhere.invalid', 1883)))\n"
                "print(socket.getaddrinfo('127.0.0.1', 1883)[0][-1])\n",
            )
            assert out.splitlines() == [
                "118",  # EHOSTUNREACH: no link
                "b'hello'",
                "116 True",  # ETIMEDOUT after the socket's timeout
                "None 11",  # non-blocking: read() answers None, recv() EAGAIN
                "104",  # refused: ECONNRESET, as lwIP reports the RST
                "-202",  # the name does not resolve
                "('127.0.0.1', 1883)",
            ]
            # the access point goes: a connected socket stalls, new ones cannot connect
            out = run(board, JOIN + "print(w.status(), w.status('rssi'))\n")
            assert out.strip() == "1010 -58"
            board.control(cmd="wlan", up=False)
            out = run(
                board,
                "import network\n"
                "w = network.WLAN(network.STA_IF)\n"
                "print(w.isconnected(), w.status())\n",
            )
            assert out.strip() == "False 1001"  # STAT_CONNECTING: it keeps trying
            board.control(cmd="wlan", up=True)
            run(board, JOIN)
    finally:
        echo.server.close()
        refused.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    accounts = [account_from_row("VB01", "pw-VB01", "terminal")]
    with MosquittoBroker(tmp_path_factory.mktemp("vb-broker"), accounts, tls=True) as b:
        yield b


CONNECT = (
    "import ssl, socket\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
    "ctx.verify_mode = ssl.CERT_REQUIRED\n"
    "ctx.load_verify_locations(cafile='ca.pem')\n"
    "s = socket.socket()\n"
    "s.settimeout(5)\n"
    "s.connect(socket.getaddrinfo('mqtt.site', %d)[0][-1])\n"
    "try:\n"
    "    t = ctx.wrap_socket(s, server_hostname='127.0.0.1')\n"
    "except ValueError as e:\n"
    "    print('rejected:', str(e).strip())\n"
    "else:\n"
    "    pkt = b'\\x00\\x04MQTT\\x04\\xc2\\x00\\x3c\\x00\\x04VB01\\x00\\x04VB01\\x00\\x07pw-VB01'\n"
    "    t.write(bytes([0x10, len(pkt)]) + pkt)\n"
    "    print('connack', t.read(4))\n"
    "    print(hasattr(t, 'settimeout'))\n"
    "    t.close()\n"
)


def test_tls_to_the_projects_mosquitto_verified_against_its_ca(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "ca.pem").write_bytes(broker.pki.ca.read_bytes())
    port = broker.ports["terminal_tls"]
    with VirtualBoard(flash, run_main=False, wlan=[WLAN], dns={"mqtt.site": HOST}) as board:
        out = run(board, JOIN + CONNECT % port)
        assert out.splitlines() == ["connack b' \\x02\\x00\\x00'", "False"]
        # a CA that did not sign the broker's certificate: refused as mbedTLS does
        other = tmp_path / "other"
        pki_dir = other / "pki"
        pki_dir.mkdir(parents=True)
        from tests.support.broker import make_pki

        (flash / "ca.pem").write_bytes(make_pki(pki_dir).ca.read_bytes())
        out = run(board, JOIN + CONNECT % port)
        assert out.strip() == "rejected: The certificate is not correctly signed by the trusted CA"


def test_ntptime_sets_the_rtc_from_an_sntp_server(tmp_path: Path) -> None:
    with SntpServer() as ntp:
        with VirtualBoard(
            tmp_path / "flash",
            run_main=False,
            wlan=[WLAN],
            routes={"192.168.4.1:123": (HOST, ntp.port)},
        ) as board:
            out = run(
                board,
                "import time, ntptime\n"
                "print(time.gmtime()[0])\n" + JOIN + "ntptime.host = '192.168.4.1'\n"
                "ntptime.timeout = 2\n"
                "ntptime.settime()\n"
                "print(time.time() + 946684800)\n",
            )
    year, unix = out.split()
    assert year == "2000"  # a board without a backup battery starts in 2000
    assert abs(int(unix) - time.time()) < 3
    assert ntp.answered == 1


def test_watchdog_resets_a_board_that_stops_feeding_it(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(
        "import machine, time\n"
        "print('cause', machine.reset_cause())\n"
        "if machine.reset_cause() != machine.WDT_RESET:\n"
        "    wdt = machine.WDT(timeout=300)\n"
        "    wdt.feed()\n"
        "    time.sleep_ms(2000)\n"  # stuck: nobody feeds it any more
    )
    with VirtualBoard(flash) as board:
        deadline = time.monotonic() + 10
        while "cause 3" not in board.console() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "cause 1\r\n" in board.console()  # power on
        assert "cause 3\r\n" in board.console(), board.console()  # then the watchdog
        assert board.control(cmd="status")["boots"] == 2
        assert "watchdog reset" in board.log()


def test_power_cut_mid_write_leaves_half_of_it_on_the_flash(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(
        "import time\n"
        "n = 0\n"
        "while True:\n"
        "    with open('log.seg', 'ab') as f:\n"
        "        f.write(b'record-%02d;' % n)\n"
        "    n += 1\n"
        "    time.sleep_ms(20)\n"
    )
    board = VirtualBoard(flash)
    with board:
        board.power_cut(at_write=3, suffix=".seg")
        assert board.wait_dead(10) == -9  # the power is gone: no clean exit
        assert "power cut during a 10-byte write to log.seg" in board.log()
        torn = (flash / "log.seg").read_bytes()
        # whole records up to the cut (at least the two armed writes before it), then half of one
        assert re.fullmatch(rb"(record-\d\d;){2,}recor", torn), torn
        board.restart()  # power back: the same flash, main.py goes on appending
        deadline = time.monotonic() + 10
        while len((flash / "log.seg").read_bytes()) < len(torn) + 10:
            assert time.monotonic() < deadline, board.console()
            time.sleep(0.05)
        assert (flash / "log.seg").read_bytes().startswith(torn + b"record-00;")


def test_ctrl_c_stops_main_py_and_the_repl_answers(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(
        "import time\nprint('agent running')\nwhile True:\n    time.sleep_ms(100)\n"
    )
    with VirtualBoard(flash) as board:
        with serial.Serial(board.port, 115200, timeout=0.2) as port:
            port.write(b"\x03")
            seen = b""
            deadline = time.monotonic() + 5
            while not seen.endswith(b">>> ") and time.monotonic() < deadline:
                seen += port.read(64)
            assert b"KeyboardInterrupt" in seen and seen.endswith(b">>> "), seen
        # and mpremote (the installer's way in) reaches a board running main.py
        board.control(cmd="reset")
        deadline = time.monotonic() + 10
        while board.console().count("agent running") < 2:
            assert time.monotonic() < deadline, board.console()
            time.sleep(0.05)
        assert run(board, "print(6 * 7)").strip() == "42"
        with pytest.raises(BoardError, match="ZeroDivisionError"):
            run(board, "1/0")
