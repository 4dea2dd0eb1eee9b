"""Poller (edge/bus.py): every device per its plan, per-device backoff, no raising.

Runs on CPython and MicroPython with FakeLink/FakeSlave and the virtual clock.
"""

import gc

from edge import modbus
from edge.bus import UNREACHABLE, Bus, Poller
from edge.errors import ConfigError
from edge.fakelink import FakeLink, FakeSlave

# Register images as docs/sensors.md lays them out.
IM100 = {0: 253, 1: 12, 2: 2031}  # io 25.3 mA, ior 1.2 mA, v 203.1 V
# kw 0x00012345 = 745.65 kW, kwh 98765 = 9876.5 kWh (0x000181CD), v 203.1 V,
# a 42.10 A, pf 0xFC7C = -900 -> -0.900
PM300 = {0: 0x0001, 1: 0x2345, 2: 0x0001, 3: 0x81CD, 4: 2031, 5: 4210, 6: 0xFC7C}
TH10 = {0: 0xFF9C, 1: 655}  # t -10.0 degC, rh 65.5 %RH


def setup(timeout_ms=200, retries=1, down_after=3, backoff_ms=10000, backoff_max_ms=80000):
    slaves = [
        FakeSlave(1, inputs=dict(IM100)),
        FakeSlave(2, inputs=dict(PM300)),
        FakeSlave(3, inputs=dict(TH10)),
    ]
    link = FakeLink(*slaves)
    bus = Bus(link, link.ticks_ms, sleep_ms=link.sleep_ms, timeout_ms=timeout_ms, retries=retries)
    devices = [
        {"name": "leak", "unit": 1, "model": "IM-100"},
        {"name": "meter", "unit": 2, "model": "PM-300"},
        {"name": "room", "unit": 3, "model": "TH-10"},
    ]
    poller = Poller(
        bus,
        devices,
        down_after=down_after,
        backoff_ms=backoff_ms,
        backoff_max_ms=backoff_max_ms,
    )
    return link, slaves, bus, poller


GOOD = [[253, 12, 2031], [74565, 98765, 2031, 4210, -900], [-100, 655]]


def every_second(link, poller, cycles, each=None):
    """Poll once per virtual second for ``cycles`` cycles; ``each(i, results, ms)``."""
    for i in range(cycles):
        t0 = link.ticks_ms()
        results = poller.poll()
        spent = link.ticks_ms() - t0
        if each is not None:
            each(i, results, spent)
        link.sleep_ms(1000 - spent if spent < 1000 else 0)


def test_reads_every_device_per_its_profile():
    _link, slaves, bus, poller = setup()
    assert poller.poll() == GOOD
    assert [s.requests for s in slaves] == [1, 1, 1]  # one request per device
    assert bus.requests == 3 and bus.replies == 3
    # The same list objects every cycle, refreshed in place.
    first = poller.results
    slaves[2].tables[4][0] = 250
    assert poller.poll() is first
    assert first[2] == [250, 655]


def test_dead_device_does_not_stall_the_others_and_costs_bounded_time():
    timeout_ms = 200
    link, slaves, _bus, poller = setup(timeout_ms=timeout_ms, retries=1, down_after=3)
    dead = slaves[2]
    dead.dead = True
    tries_at = []
    inner = dead.__call__

    def logging_dead(request):
        if request[0] == 3:
            tries_at.append(link.ticks_ms())
        return inner(request)

    link.slaves[2] = logging_dead
    cycles = 600
    slow_cycles = []

    def check(i, results, spent):
        assert results[0] == GOOD[0] and results[1] == GOOD[1], (i, results)
        assert results[2] == [UNREACHABLE, UNREACHABLE]
        if spent > 100:
            slow_cycles.append(i)

    every_second(link, poller, cycles, check)
    assert slaves[0].requests == cycles and slaves[1].requests == cycles
    dev = poller.devices[2]
    assert not dev.up
    # One attempt costs at most: t3.5 wait + request + timeout + reply time.
    attempt_ms = 6 + 9 + timeout_ms + 15
    # Down after 3 cycles of (1 + 1 retry) timeouts, then one try per backoff
    # period: 10, 20, 40, 80, 80, ... s  -> probes at 13, 33, 73, 153, 233, ...
    probes = 0
    t, backoff = 3, 10
    while t + backoff < cycles:
        t += backoff
        probes += 1
        backoff = min(backoff * 2, 80)
    assert dead.requests == 3 * 2 + probes, (dead.requests, probes)
    assert dev.bus_ms <= dead.requests * attempt_ms, dev.bus_ms
    # Without the backoff the dead device would have cost ~600 * 2 timeouts
    # (about 4 minutes of a 10 minute run); with it about 3 s.
    assert dev.bus_ms < 0.01 * cycles * 1000
    # The only slow cycles are the first three and the probes.
    assert len(slow_cycles) == 3 + probes
    # Probe spacing doubles up to the cap.
    gaps = [tries_at[i + 1] - tries_at[i] for i in range(6, len(tries_at) - 1)]
    wants = (20000, 40000, 80000, 80000)
    assert len(gaps) >= len(wants), gaps
    for k in range(len(wants)):
        assert wants[k] - 10 <= gaps[k] <= wants[k] + 1000, (gaps, wants)
    c = poller.counters()
    assert c["downs"] == 1 and c["devices_down"] == 1 and c["recoveries"] == 0
    assert c["skipped"] == cycles - dev.polls
    assert c["timeouts"] == dead.requests


def test_down_device_recovers_on_first_good_reply():
    link, slaves, _bus, poller = setup(down_after=2, backoff_ms=5000, backoff_max_ms=20000)
    slaves[0].dead = True
    every_second(link, poller, 30)
    dev = poller.devices[0]
    assert not dev.up and dev.backoff_ms == 20000
    slaves[0].dead = False
    got = []
    every_second(link, poller, 25, lambda i, r, ms: got.append(r[0][0]))
    assert dev.up and dev.fails == 0 and dev.backoff_ms == 0
    assert got[-1] == 253
    # Back within one backoff period (20 s), and polled every cycle after it.
    first = got.index(253)
    assert first <= 20
    assert got[first:] == [253] * (25 - first)
    assert poller.counters()["recoveries"] == 1


def test_exception_reply_keeps_device_up_with_points_unreachable():
    _link, slaves, bus, poller = setup(down_after=1)
    slaves[1].exception = 4  # slave device failure
    for _ in range(5):
        results = poller.poll()
    assert results[1] == [UNREACHABLE] * 5
    assert results[0] == GOOD[0] and results[2] == GOOD[2]
    assert poller.devices[1].up
    assert bus.exceptions == 5 and bus.retries == 0


def test_split_plan_one_range_refused_others_read():
    profile = {
        "model": "XY-2",
        "points": [
            {"name": "a", "fc": 4, "addr": 0, "type": "u16"},
            {"name": "b", "fc": 4, "addr": 100, "type": "u16"},
            {"name": "c", "fc": 3, "addr": 7, "type": "s16"},
        ],
    }
    slave = FakeSlave(5, inputs={0: 11}, holding={7: 0xFFFE})  # 100 is not mapped
    link = FakeLink(slave)
    bus = Bus(link, link.ticks_ms, sleep_ms=link.sleep_ms)
    poller = Poller(bus, [{"name": "x", "unit": 5, "profile": profile}])
    assert len(poller.devices[0].plan) == 3
    assert poller.poll() == [[11, UNREACHABLE, -2]]
    assert slave.requests == 3 and bus.exceptions == 1


def lcg(seed):
    """Deterministic pseudo-random bytes (the same on every runtime)."""
    state = [seed]

    def byte():
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return state[0] >> 16 & 0xFF

    return byte


def test_bad_input_never_raises_and_never_yields_wrong_values():
    link, _slaves, _bus, poller = setup(timeout_ms=50, retries=1, down_after=1000)
    rnd = lcg(7)

    def mangle(reply):
        k = rnd() % 8
        r = bytearray(reply)
        if k == 0:
            r[rnd() % len(r)] ^= 1 << rnd() % 8  # flipped bit
        elif k == 1:
            return bytes(r[: rnd() % len(r)])  # truncated
        elif k == 2:
            return [bytes(rnd() for _ in range(rnd() % 12)), bytes(r)]  # garbage first
        elif k == 3:
            return bytes(rnd() for _ in range(rnd() % 40))  # garbage only
        elif k == 4:
            r[0] ^= 0x10  # another unit's id, CRC now wrong too
        elif k == 5:
            return None
        return bytes(r)

    link.set_manipulator(mangle)
    good = 0
    for _ in range(400):
        results = poller.poll()
        for d in range(len(GOOD)):
            for k in range(len(GOOD[d])):
                g = results[d][k]
                assert g is UNREACHABLE or g == GOOD[d][k], (d, k, g)
                good += g is not UNREACHABLE
        link.sleep_ms(100)
    c = poller.counters()
    assert good > 0
    assert c["crc_errors"] > 0 and c["frame_errors"] > 0 and c["timeouts"] > 0
    assert c["retries"] > 0 and c["discarded"] > 0


def test_device_list_is_validated():
    link = FakeLink()
    bus = Bus(link, link.ticks_ms, sleep_ms=link.sleep_ms)
    bad_lists = (
        [],
        [{"name": "a", "unit": 1, "model": "NOPE"}],
        [{"name": "a", "unit": 0, "model": "IM-100"}],
        [{"name": "a", "unit": 248, "model": "IM-100"}],
        [{"name": "", "unit": 1, "model": "IM-100"}],
        [{"name": "a", "unit": 1, "model": "IM-100"}, {"name": "b", "unit": 1, "model": "TH-10"}],
        [{"name": "a", "unit": 1, "model": "IM-100"}, {"name": "a", "unit": 2, "model": "TH-10"}],
        [{"name": "a", "unit": 1, "profile": {"model": "Q", "points": []}}],
    )
    for devices in bad_lists:
        try:
            Poller(bus, devices)
        except ConfigError:
            continue
        raise AssertionError("accepted %r" % (devices,))


def collect_frees_memory():
    """True when gc.collect() frees garbage right away.

    Not so on MicroPython's WebAssembly (pyscript) port: there gc.collect()
    only marks a collection as pending, done when control returns to
    JavaScript, so retained growth cannot be measured inside one test run.
    """
    if not hasattr(gc, "mem_alloc"):
        return True
    gc.collect()
    before = gc.mem_alloc()
    junk = bytearray(4000)
    junk = None
    gc.collect()
    return gc.mem_alloc() - before < 4000 and junk is None


def in_use():
    """Bytes in use after a full collection (MicroPython gc, CPython tracemalloc)."""
    gc.collect()
    if hasattr(gc, "mem_alloc"):
        return gc.mem_alloc()
    import tracemalloc

    return tracemalloc.get_traced_memory()[0]


def test_poll_loop_allocates_little_and_retains_nothing():
    micropython = hasattr(gc, "mem_alloc")
    if not micropython:
        import tracemalloc

        tracemalloc.start()
    try:
        link, slaves, _bus, poller = setup()
        for _ in range(100):  # warm up: first-use allocations
            poller.poll()
            link.sleep_ms(100)
        if micropython:
            # Allocation per cycle, master and FakeLink together (the fake
            # allocates most of it); early in virtual time so the fake's
            # microsecond clock is still a small int.
            gc.disable()
            start = gc.mem_alloc()
            for _ in range(100):
                poller.poll()
                link.sleep_ms(100)
            per_cycle = (gc.mem_alloc() - start) // 100
            gc.enable()
            print("memory: %d bytes allocated per cycle (3 devices, FakeLink)" % per_cycle)
            assert per_cycle < 2500, per_cycle
        measurable = collect_frees_memory()
        before = in_use()
        cycles = 10000
        for _ in range(cycles):
            poller.poll()
            link.sleep_ms(100)
        after = in_use()
    finally:
        if not micropython:
            tracemalloc.stop()
    assert poller.results == GOOD
    assert slaves[2].requests == cycles + (200 if micropython else 100)
    if measurable:
        print("memory: %d cycles, retained growth %d bytes" % (cycles, after - before))
        # A leak of even one small object per cycle would be >= 16 bytes * 10000;
        # what remains is noise (counters and clocks growing into bigger ints).
        assert after - before < 1024, after - before
    else:
        print("memory: gc.collect() is deferred on this port; retained growth not measurable here")


def test_fake_slave_requests_and_units():
    link, slaves, _bus, _poller = setup()
    # A request for a unit nobody has gets silence from every slave.
    assert link.slaves[0](modbus.build_read_request(9, 4, 0, 1)) is None
    assert [s.requests for s in slaves] == [0, 0, 0]
