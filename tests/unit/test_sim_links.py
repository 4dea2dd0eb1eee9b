"""Cutting a byte stream into RTU frames, and the pty link in process."""

from __future__ import annotations

import asyncio
import os
import time

from firmware_sim import Bus, SimClock
from firmware_sim.links import PtyLink, RtuSplitter
from tests.support.sim import crc_ok, read_request, with_crc, words


def test_whole_and_back_to_back_frames():
    splitter = RtuSplitter()
    a, b = read_request(1, 4, 0, 3), read_request(2, 3, 9000, 2)
    assert splitter.feed(a + b) == [a, b]
    assert not splitter.pending


def test_frame_split_across_reads():
    splitter = RtuSplitter()
    frame = read_request(1, 4, 0, 3)
    for i in range(len(frame) - 1):
        assert splitter.feed(frame[i : i + 1]) == []
    assert splitter.feed(frame[-1:]) == [frame]


def test_unknown_length_waits_for_silence():
    splitter = RtuSplitter()
    odd = with_crc(bytes([1, 0x41, 1, 2, 3]))  # a function code pymodbus cannot size
    assert splitter.feed(odd) == []
    assert splitter.pending
    assert splitter.flush() == odd
    assert splitter.flush() is None


def test_garbage_is_dropped_by_silence_not_glued_to_the_next_frame():
    splitter = RtuSplitter()
    assert splitter.feed(b"\x01\x04\x00") == []  # a torn request, then the line goes quiet
    assert splitter.flush() == b"\x01\x04\x00"
    good = read_request(1, 4, 0, 1)
    assert splitter.feed(good) == [good]


def test_corrupt_request_stays_until_silence():
    splitter = RtuSplitter()
    bad = read_request(1, 4, 0, 1)[:-1] + b"\x00"
    assert splitter.feed(bad) == []
    assert splitter.flush() == bad


def test_pty_link_serves_the_bus_and_delays_slow_replies():
    async def scenario() -> tuple[bytes, bytes, float]:
        bus = Bus(SimClock(start=1_780_000_000, speed=0), seed=1)
        bus.add("thermo", 7)
        link = PtyLink(bus)
        fd = os.open(link.name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        loop = asyncio.get_running_loop()
        try:

            async def exchange(request: bytes) -> bytes:
                got = asyncio.Event()
                data = bytearray()

                def readable() -> None:
                    data.extend(os.read(fd, 256))
                    if len(data) >= 5 + data[2]:
                        got.set()

                loop.add_reader(fd, readable)
                os.write(fd, request)
                try:
                    await asyncio.wait_for(got.wait(), 5)
                finally:
                    loop.remove_reader(fd)
                return bytes(data)

            first = await exchange(read_request(7, 3, 9000, 2))
            bus.inject(7, "slow", delay_ms=300)
            began = time.monotonic()
            slow = await exchange(read_request(7, 3, 9000, 2))
            return first, slow, time.monotonic() - began
        finally:
            os.close(fd)
            link.close()

    first, slow, took = asyncio.run(scenario())
    assert crc_ok(first) and words(first[3:-2]) == [0x3001, 0x0100]
    assert slow == first
    assert took >= 0.3
