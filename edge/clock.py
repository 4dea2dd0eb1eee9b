"""Terminal time: monotonic seconds and synchronised Unix time.

Times are whole seconds as ints. On 32-bit MicroPython boards floats are
single precision (a Unix time as float is only good to about 2 minutes) and
small ints stop at 2**30, which is why the board epoch is 2000-01-01: seconds
since 2000 stay small ints until 2034, Unix seconds are already past 2**30.
So :meth:`Clock.now_2000` is the allocation-free reading, and
:meth:`Clock.now_unix` (what frames carry in ``ts``) adds ``EPOCH_2000``.

Nothing here reads hardware: the time sources come in through the
constructors (``time.ticks_ms``/``ticks_diff`` and the RTC on a board; the
host HAL passes CPython equivalents).
"""

EPOCH_2000 = 946684800  # Unix time of 2000-01-01T00:00:00Z, MicroPython's board epoch
MIN_VALID_UNIX = 1577836800  # 2020-01-01: anything earlier is a broken time source
MAX_VALID_UNIX = 4102444800  # 2100-01-01
TICKS_PERIOD_HALF_MS = 1 << 29  # ticks_diff is exact up to half the smallest port period


class Monotonic:
    """Monotonic whole seconds since construction, from wrapping ms ticks.

    ``ticks_ms``/``ticks_diff`` are ``time.ticks_ms``/``time.ticks_diff`` on
    MicroPython. ``ticks_ms`` wraps (every 2**30 ms, about 12 days, on most
    ports); calling this object at least once per ``TICKS_PERIOD_HALF_MS``
    (6 days) keeps it exact. The agent's main loop calls it every cycle.
    """

    def __init__(self, ticks_ms, ticks_diff):
        self._ticks = ticks_ms
        self._diff = ticks_diff
        self._last = ticks_ms()
        self._secs = 0
        self._ms = 0  # sub-second remainder, kept so seconds never drift

    def __call__(self):
        now = self._ticks()
        d = self._diff(now, self._last)
        self._last = now
        if d > 0:
            ms = self._ms + d
            self._secs += ms // 1000
            self._ms = ms % 1000
        return self._secs


class Clock:
    """Unix time that knows whether it can be trusted.

    ``mono()`` returns monotonic whole seconds (a :class:`Monotonic`).
    ``rtc()`` (optional) returns the board's real-time clock in seconds since
    ``rtc_epoch`` (2000 on boards, 1970 on the unix and webassembly ports);
    it is only used until the first sync, so a battery-backed RTC gives
    plausible times after a reboot without network. Without an RTC, time
    before the first sync is ``2000-01-01 + uptime``.

    ``max_age``: seconds after the last sync within which the clock counts as
    synchronised; past that, :attr:`synced` is false and frames carry the
    ``unsynced`` flag until NTP or the cloud sets the time again.
    ``on_sync(unix)``, when given, is called after each accepted sync (the
    board HAL sets the RTC there).
    """

    def __init__(self, mono, rtc=None, rtc_epoch=2000, max_age=86400, on_sync=None):
        if rtc_epoch not in (1970, 2000):
            raise ValueError("rtc_epoch must be 1970 or 2000")
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        self._mono = mono
        self._rtc = rtc
        self._rtc_shift = 0 if rtc_epoch == 2000 else -EPOCH_2000
        self.max_age = max_age
        self._on_sync = on_sync
        self._base = None  # seconds since 2000 at mono time _at
        self._at = 0
        self.source = None  # "ntp" or "cloud" of the last accepted sync
        self.last_step = None  # correction applied by the last sync, seconds
        self.syncs = 0

    def sync(self, unix, source):
        """Set the time from ``source`` ("ntp" or "cloud": birth reply, cmd resync).

        ``unix`` is Unix seconds (int or float; fractions are dropped).
        Returns True when accepted, False for a time outside 2020..2100 (a
        source that is obviously wrong must not unsynchronise good data).
        """
        if source not in ("ntp", "cloud"):
            raise ValueError("source must be 'ntp' or 'cloud'")
        if not MIN_VALID_UNIX <= unix < MAX_VALID_UNIX:
            return False
        at = self._mono()
        new = int(unix) - EPOCH_2000
        self.last_step = new - self._estimate(at)
        self._base = new
        self._at = at
        self.source = source
        self.syncs += 1
        if self._on_sync is not None:
            self._on_sync(int(unix))
        return True

    def now_2000(self):
        """Seconds since 2000-01-01 UTC (a small int on every port until 2034)."""
        return self._estimate(self._mono())

    def now_unix(self):
        """Unix seconds, synchronised or best effort (see :attr:`synced`)."""
        return self.now_2000() + EPOCH_2000

    @property
    def synced(self):
        """True when the last sync is at most ``max_age`` seconds old."""
        return self._base is not None and self._mono() - self._at <= self.max_age

    @property
    def unsynced(self):
        """The frames' ``unsynced`` flag: not :attr:`synced`."""
        return not self.synced

    def age(self):
        """Seconds since the last sync, or None before the first one."""
        if self._base is None:
            return None
        return self._mono() - self._at

    def status(self):
        """Clock health for status frames and the operator: a small dict."""
        return {
            "synced": self.synced,
            "source": self.source,
            "age": self.age(),
            "step": self.last_step,
            "syncs": self.syncs,
        }

    def _estimate(self, at):
        if self._base is not None:
            return self._base + (at - self._at)
        if self._rtc is not None:
            return int(self._rtc()) + self._rtc_shift
        return at
