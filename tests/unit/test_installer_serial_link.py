"""edge.host.serial_link.SerialLink keeps the Link contract on a real pty."""

from __future__ import annotations

import os
import time
import tty
from collections.abc import Iterator

import pytest

from edge.host.serial_link import SerialLink


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_write_puts_the_frame_on_the_line(pty: tuple[int, str]) -> None:
    master, path = pty
    with SerialLink(path, baud=9600) as link:
        link.write(bytearray(b"\x01\x03\x23\x28\x00\x01\x0f\xf2"))
        assert os.read(master, 64) == b"\x01\x03\x23\x28\x00\x01\x0f\xf2"


def test_read_returns_as_soon_as_n_bytes_arrived(pty: tuple[int, str]) -> None:
    master, path = pty
    with SerialLink(path) as link:
        os.write(master, b"abcdef")
        started = time.monotonic()
        assert link.read(4, 2000) == b"abcd"
        assert link.read(2, 2000) == b"ef"
        assert time.monotonic() - started < 1.0


def test_read_returns_what_came_when_the_timeout_runs_out(pty: tuple[int, str]) -> None:
    master, path = pty
    with SerialLink(path) as link:
        os.write(master, b"ab")
        started = time.monotonic()
        assert link.read(5, 150) == b"ab"
        took = time.monotonic() - started
        assert 0.14 <= took < 1.0
        assert link.read(5, 50) == b""


def test_flush_input_discards_what_was_received(pty: tuple[int, str]) -> None:
    master, path = pty
    with SerialLink(path) as link:
        os.write(master, b"stale")
        deadline = time.monotonic() + 2
        while link._serial.in_waiting < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        link.flush_input()
        os.write(master, b"new")
        assert link.read(8, 100) == b"new"


def test_a_missing_port_raises_oserror() -> None:
    with pytest.raises(OSError):
        SerialLink("/dev/ttyUSB9-nonexistent")


def test_clock() -> None:
    a = SerialLink.ticks_ms()
    SerialLink.sleep_ms(20)
    assert SerialLink.ticks_diff(SerialLink.ticks_ms(), a) >= 20
