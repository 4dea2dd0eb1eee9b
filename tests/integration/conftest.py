"""Fixtures shared by the integration tests of this directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sim import SimProcess


@pytest.fixture
def insulation_sim() -> Iterator[SimProcess]:
    """One simulated insulation monitor (IM-100, unit 1) on a pty, its time
    frozen so its values are exact."""
    with SimProcess(
        "--pty", "--device", "insulation:1", "--speed", "0", "--start", "2026-06-01T14:00"
    ) as s:
        yield s
