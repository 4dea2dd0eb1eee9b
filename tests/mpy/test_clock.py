"""Terminal clock: runs under CPython (pytest) and real MicroPython."""

from edge.clock import EPOCH_2000, Clock, Monotonic

T0 = 1767225600  # 2026-01-01T00:00:00Z


class FakeTicks:
    """ms ticks that wrap like a board's (period 2**30 ms)."""

    PERIOD = 1 << 30

    def __init__(self, start):
        self.now = start

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        half = self.PERIOD // 2
        return ((a - b + half) % self.PERIOD) - half

    def advance(self, ms):
        self.now = (self.now + ms) % self.PERIOD


class FakeMono:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def test_monotonic_counts_seconds_across_tick_wrap():
    ticks = FakeTicks((1 << 30) - 1500)
    mono = Monotonic(ticks.ticks_ms, ticks.ticks_diff)
    assert mono() == 0
    ticks.advance(999)
    assert mono() == 0
    ticks.advance(1)
    assert mono() == 1
    ticks.advance(2500)  # wraps
    assert mono() == 3
    for _ in range(10):
        ticks.advance(400 * 1000 * 1000)  # about 4.6 days per step
        mono()
    assert mono() == 4000003  # 3.5 s + 4e6 s: no milliseconds lost on the way
    assert isinstance(mono(), int)


def test_unsynced_until_first_sync_then_tracks_monotonic_time():
    mono = FakeMono()
    clock = Clock(mono, max_age=3600)
    assert not clock.synced and clock.unsynced
    assert clock.age() is None
    assert clock.now_2000() == 0  # no RTC: 2000-01-01 + uptime
    mono.t = 100
    assert clock.sync(T0 + 0.7, "ntp")
    assert clock.synced and not clock.unsynced
    assert clock.now_unix() == T0
    mono.t = 160
    assert clock.now_unix() == T0 + 60
    assert clock.now_2000() == T0 + 60 - EPOCH_2000
    assert isinstance(clock.now_unix(), int)


def test_synced_flag_expires_without_resync():
    mono = FakeMono()
    clock = Clock(mono, max_age=3600)
    clock.sync(T0, "cloud")
    mono.t = 3600
    assert clock.synced
    mono.t = 3601
    assert not clock.synced and clock.unsynced
    assert clock.now_unix() == T0 + 3601  # still the best estimate
    assert clock.sync(T0 + 3605, "cloud")
    assert clock.synced
    assert clock.last_step == 4
    assert clock.status() == {"synced": True, "source": "cloud", "age": 0, "step": 4, "syncs": 2}


def test_rtc_with_2000_epoch_before_first_sync():
    mono = FakeMono()
    clock = Clock(mono, rtc=lambda: T0 - EPOCH_2000 + 5, rtc_epoch=2000)
    assert clock.now_unix() == T0 + 5
    assert clock.unsynced


def test_rtc_with_1970_epoch_and_on_sync_callback():
    mono = FakeMono()
    seen = []
    clock = Clock(mono, rtc=lambda: T0 + 0.5 + mono.t, rtc_epoch=1970, on_sync=seen.append)
    assert clock.now_unix() == T0
    mono.t = 10
    clock.sync(T0 + 100, "ntp")
    assert seen == [T0 + 100]
    assert clock.last_step == 90
    mono.t = 20
    assert clock.now_unix() == T0 + 110


def test_absurd_times_are_refused_and_keep_state():
    mono = FakeMono()
    clock = Clock(mono)
    assert not clock.sync(0, "cloud")
    assert not clock.sync(946684800, "ntp")  # an RTC that reset to 2000
    assert not clock.synced
    assert clock.sync(T0, "ntp")
    assert not clock.sync(5000000000, "cloud")
    assert clock.now_unix() == T0 and clock.source == "ntp"
    for bad in ((T0, "gps"),):
        try:
            clock.sync(*bad)
        except ValueError:
            pass
        else:
            raise AssertionError(bad)
