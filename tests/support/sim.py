"""Test helpers for the simulated sensors (firmware_sim).

Deliberately independent of the code under test: the CRC is the bitwise
CRC-16/MODBUS from the specification (not pymodbus's table, not ours), and
replies are parsed by hand, so a shared bug cannot hide itself.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), bit by bit."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    """Append the CRC, low byte first as RTU sends it."""
    return body + struct.pack("<H", crc16_modbus(body))


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and struct.unpack("<H", frame[-2:])[0] == crc16_modbus(frame[:-2])


def read_request(unit: int, fc: int, address: int, count: int) -> bytes:
    return with_crc(struct.pack(">BBHH", unit, fc, address, count))


def parse_reply(frame: bytes) -> tuple[int, int, bytes]:
    """(unit, fc, data after the byte count) of a good read reply; asserts the CRC."""
    assert crc_ok(frame), f"bad CRC in {frame.hex()}"
    unit, fc = frame[0], frame[1]
    if fc & 0x80:
        return unit, fc, frame[2:3]
    assert frame[2] == len(frame) - 5, f"byte count mismatch in {frame.hex()}"
    return unit, fc, frame[3:-2]


def words(data: bytes) -> list[int]:
    return list(struct.unpack(f">{len(data) // 2}H", data))


def bits(data: bytes, count: int) -> list[int]:
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]


def s16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


def join32(first: int, second: int, order: str, signed: bool) -> int:
    high, low = (first, second) if order == "ABCD" else (second, first)
    value = (high << 16) | low
    if signed and value & 0x80000000:
        value -= 1 << 32
    return value


def poll(predicate, timeout: float, what: str, interval: float = 0.01):
    """Call ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class SimProcess:
    """``python -m firmware_sim serve ...`` as a child process, stopped on exit.

    Waits (with a deadline) for the ``ready`` line and records the endpoints
    it printed in :attr:`endpoints` (``{"pty": "/dev/pts/3", "tcp": ...}``).
    """

    def __init__(self, *args: str, ready_timeout: float = 20.0) -> None:
        self.args = [sys.executable, "-m", "firmware_sim", "serve", *args]
        self.ready_timeout = ready_timeout
        self.endpoints: dict[str, str] = {}
        self.proc: subprocess.Popen[str] | None = None
        self.stdout_tail = ""
        self.stderr = ""

    def __enter__(self) -> SimProcess:
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        # Raw reads on the descriptor: a buffered readline() could swallow the
        # "ready" line into its buffer where select() no longer sees it.
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        pending = b""
        deadline = time.monotonic() + self.ready_timeout
        try:
            while True:
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    key, _, value = raw.decode().strip().partition(" ")
                    if key == "ready":
                        return self
                    self.endpoints[key] = value
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.kill()
                    raise AssertionError(
                        f"simulator not ready in {self.ready_timeout} s: {self.stderr}"
                    )
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.kill()
                    raise AssertionError(f"simulator exited before ready: {self.stderr}")
                pending += chunk
        finally:
            sel.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            _, self.stderr = self.proc.communicate(timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, self.stderr = self.proc.communicate(timeout=timeout)
        self.stdout_tail = out
        return self.proc.returncode

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)

    def address(self, key: str) -> tuple[str, int]:
        host, _, port = self.endpoints[key].rpartition(":")
        return host, int(port)


class Control:
    """Client of the JSON-lines control channel."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.file = self.sock.makefile("rwb")

    def __call__(self, **request) -> dict:
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()
        line = self.file.readline()
        assert line, "control channel closed"
        return json.loads(line)

    def ok(self, **request) -> dict:
        reply = self(**request)
        assert reply["ok"], reply
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class RawLine:
    """A raw RTU master on a tty path or a TCP address: bytes out, bytes back.

    :meth:`exchange` writes a read request and returns the reply frame as
    received, CRC unchecked, so corrupted replies can be inspected byte by byte.
    """

    def __init__(
        self, tty: str | None = None, tcp: tuple[str, int] | None = None, fd: int | None = None
    ) -> None:
        self._serial = None
        self._sock = None
        if fd is not None:  # e.g. the master side of a pty the test made itself
            self._fd = fd
        elif tty is not None:
            import serial

            self._serial = serial.Serial(tty, 9600, timeout=0)
            self._fd = self._serial.fileno()
        else:
            assert tcp is not None
            self._sock = socket.create_connection(tcp, timeout=5)
            self._sock.setblocking(False)
            self._fd = self._sock.fileno()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)

    def _read(self) -> bytes:
        if self._sock is not None:
            return self._sock.recv(4096)
        return os.read(self._fd, 4096)

    def _write(self, data: bytes) -> None:
        if self._sock is not None:
            self._sock.sendall(data)
        elif self._serial is not None:
            self._serial.write(data)
            self._serial.flush()
        else:
            os.write(self._fd, data)

    def exchange(self, request: bytes, timeout: float = 2.0) -> bytes:
        """Send ``request``; return the reply frame, or b"" if none came within ``timeout``."""
        self._drain()
        self._write(request)
        return self.collect(timeout)

    def collect(self, timeout: float = 2.0) -> bytes:
        """Read one reply frame; its length comes from the function code and byte count."""
        data = b""
        deadline = time.monotonic() + timeout
        while len(data) < self._expected(data):
            wait = deadline - time.monotonic()
            if wait <= 0 or not self._sel.select(wait):
                return data
            chunk = self._read()
            if not chunk:
                return data
            data += chunk
        return data

    @staticmethod
    def _expected(data: bytes) -> int:
        if len(data) < 3:
            return 3
        if data[1] & 0x80:
            return 5
        return 5 + data[2]

    def _drain(self) -> None:
        while self._sel.select(0):
            if not self._read():
                return

    def close(self) -> None:
        self._sel.close()
        if self._sock is not None:
            self._sock.close()
        elif self._serial is not None:
            self._serial.close()
