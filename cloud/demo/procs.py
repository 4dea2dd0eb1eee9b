"""Child processes: start, wait until ready, stop without orphans.

The demo launcher's children, and the processes tests and benchmarks start
(:class:`Child`, :func:`free_port`): one helper for all of them.

Every child runs in its own session (so its own process group): a Ctrl-C in
the terminal reaches only the launcher, which then stops the children in
its own order (terminals first, broker last). Stopping a child signals its
whole group: SIGTERM, then SIGKILL after ``timeout``, so anything the child
started goes too. On Linux a child also gets SIGKILL if the launcher dies
without cleaning up (``PR_SET_PDEATHSIG``), so even ``kill -9`` of the
launcher leaves no stray workers holding ports.

Every child's environment carries ``MIMAMORI_DEMO_RUN=<token of this run>``;
tests find every process of a run by that mark in ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

RUN_ENV = "MIMAMORI_DEMO_RUN"
PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A child exited or did not become ready in time; the message says which
    and ends with the tail of its log."""


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook that asks Linux to SIGKILL the child when the launcher
    dies; None elsewhere (the launcher's own cleanup still stops everything).
    libc is loaded here, in the parent: the hook itself only makes the call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return hook


class Child:
    """One child process with its output in ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str],
        cwd: Path,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        # What asks this child to stop cleanly (werkzeug's server only knows SIGINT).
        self.stop_signal = stop_signal
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # The launcher starts children from its main thread only.
                preexec_fn=_die_with_parent(),  # noqa: PLW1509
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check(self) -> None:
        """Raise StartError when the child is not running (any more)."""
        if not self.running():
            code = self.proc.returncode if self.proc else None
            raise StartError(f"{self.name} exited ({code}):\n{self.log_tail()}")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``ready`` until true; StartError if the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise StartError(f"{self.name} exited ({code}) before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise StartError(
                    f"{self.name}: no {what} within {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def wait_log(self, text: str, timeout: float) -> None:
        self.wait_until(lambda: text in self.log_text(), repr(text), timeout)

    def wait_port(self, host: str, port: int, timeout: float) -> None:
        self.wait_until(lambda: port_open(host, port), f"listener on {host}:{port}", timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Signal the child's group (``stop_signal``, SIGTERM by default),
        SIGKILL it after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # its own session: group id = its pid
        if self.proc.poll() is None:
            _signal_group(pgid, self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                self.proc.wait(timeout)
        # The leader is gone; anything it left in its group goes too.
        _signal_group(pgid, signal.SIGKILL)
        return self.proc.returncode


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), 0.5):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now; the caller binds it soon after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class Sink(Protocol):
    """A demo receiver (mail, chat): listens on ``start``, stops on ``stop``."""

    def start(self) -> object: ...

    def stop(self) -> None: ...


def serve_until_signalled(sink: Sink, what: str, address: Callable[[], str]) -> int:
    """The command line of a demo receiver: start ``sink``, print
    ``address()`` and ``ready`` (the launcher waits for that line), serve
    until SIGTERM or SIGINT, stop. Exit status 2, with one line naming
    ``what``, when it cannot listen."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        sink.start()
    except OSError as err:
        print(f"error: {what} could not listen: {err}", file=sys.stderr)
        return 2
    print(address(), flush=True)
    print("ready", flush=True)
    try:
        stop.wait()
    finally:
        sink.stop()
    return 0
