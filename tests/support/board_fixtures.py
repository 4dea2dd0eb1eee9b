"""pytest fixtures of the tests that flash a board (registered in ``tests/conftest.py``
and ``hil_tests/conftest.py``; a plugin registered twice is loaded once, so
both suites share one instance per session):

- ``board_bundle``: the board build as an installer makes it for firmware
  without umqtt (``mimamori-install build --with-umqtt``), built once per
  session for the HIL suite's board variant and the installer's journey;
- ``sntp``: a time server (:class:`firmware_sim.sntp.SntpServer`) that a
  virtual board reaches under the NTP name its site gives (``--dns`` plus a
  ``--route`` of port 123), as a board on site reaches its NTP server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim.sntp import SntpServer
from tests.support.installer import run_tool


@pytest.fixture(scope="session")
def board_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The board bundle with umqtt.simple from PyPI in it (about 10 s to build)."""
    out = tmp_path_factory.mktemp("board-bundle") / "bundle"
    built = run_tool("build", "--with-umqtt", "--out", str(out), timeout=600)
    assert built.status == 0, f"mimamori-install build: {built.out}{built.err}"
    return out


@pytest.fixture(scope="session")
def sntp() -> Iterator[SntpServer]:
    with SntpServer() as server:
        yield server
