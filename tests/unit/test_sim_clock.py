"""SimClock: real time, accelerated, frozen, settable."""

from __future__ import annotations

import pytest

from firmware_sim import SimClock


class FakeWall:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_runs_at_its_speed_against_the_wall_clock():
    wall = FakeWall()
    clock = SimClock(start=1_700_000_000, speed=60, wall=wall)
    assert clock.now() == 1_700_000_000
    wall.now += 2.5
    assert clock.now() == 1_700_000_150


def test_real_time_by_default_starting_now():
    wall = FakeWall()
    clock = SimClock(wall=wall, origin=lambda: 42.0)
    wall.now += 3
    assert clock.speed == 1
    assert clock.now() == 45.0


def test_set_advance_and_speed_change_without_jumps():
    wall = FakeWall()
    clock = SimClock(start=0, speed=10, wall=wall)
    wall.now += 1
    clock.set_speed(100)  # no jump at the change
    assert clock.now() == 10
    wall.now += 1
    assert clock.now() == 110
    clock.set(5000)
    assert clock.now() == 5000
    clock.advance(86400)
    assert clock.now() == 91400
    clock.advance(-400)
    assert clock.now() == 91000


def test_frozen_clock_only_moves_when_told():
    wall = FakeWall()
    clock = SimClock(start=10, speed=0, wall=wall)
    wall.now += 1e6
    assert clock.now() == 10
    clock.advance(5)
    assert clock.now() == 15


@pytest.mark.parametrize("speed", [-1, float("nan")])
def test_rejects_bad_speeds(speed):
    with pytest.raises(ValueError, match="speed"):
        SimClock(start=0, speed=speed)
    clock = SimClock(start=0, speed=1)
    with pytest.raises(ValueError, match="speed"):
        clock.set_speed(speed)
