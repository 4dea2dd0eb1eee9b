"""Local alarm decisions on the terminal.

The cloud pushes thresholds (see ``edge/config.py``); the terminal decides
alarms itself so that an alarm frame leaves the moment a condition changes,
even when the uplink is slow. The evaluator is pure: values in engineering
units (``raw * 10**exp``) and timestamps in monotonic seconds go in, events
come out. No I/O, no clock reads, no allocation on a sample that changes
nothing (it returns the shared empty tuple then).

An event is the tuple ``(alias, cond, level, state, value, threshold)``:

========= ==================================================================
alias     channel alias (small int, as announced in the birth frame)
cond      ``"hi"``, ``"lo"``, ``"leak"``, ``"contact"`` or ``"unreach"``
level     ``WARN`` (1) or ``ALARM`` (2)
state     ``RAISED`` (``"raised"``) or ``CLEARED`` (``"cleared"``)
value     the value that caused the change (``None`` when there is none,
          e.g. sensor unreachable, or a rule removed by a new config)
threshold the level's threshold in force (contact: the alarm state 0/1;
          unreach: the number of failed reads)
========= ==================================================================

The fields are those of the protocol's alarm frame, in its order and with
its values (``protocol/frames.py``), so the agent builds the frame with
``dict(zip(EVENT_KEYS, event))``.

Events are emitted only on state changes: a level is never raised twice
without a clear in between, nor cleared when it is not raised. Each level of
a rule is its own state machine, so escalation raises ``ALARM`` while
``WARN`` stays raised, and de-escalation clears ``ALARM`` only. A value that
jumps straight past both levels raises ``WARN`` then ``ALARM`` in that order;
a clear of both is reported ``ALARM`` first.

Conditions (``on_delay``/``off_delay`` in seconds, measured between samples,
so a delay shorter than the sampling interval means "next sample"):

* ``hi``: raise when ``value >= thr`` has held for ``on_delay``; clear when
  ``value < thr - hyst`` has held for ``off_delay``. In the band between,
  the level keeps its state (hysteresis), and pending timers restart.
* ``lo``: mirror image (``value <= thr``; clear when ``value > thr + hyst``).
* ``leak`` (maintenance-contract rule): raise when ``value >= thr`` has held
  for ``on_delay``, OR when ``count`` excursions started within the last
  ``window`` seconds. An excursion is counted once, on its rising edge; it
  re-arms only after the value fell below ``thr - hyst``, so noise on top of
  one excursion is not counted again. Clear when the value has been below
  ``thr - hyst`` for ``off_delay`` AND fewer than ``count`` excursions lie
  within the window (repeated excursions keep the alarm up).
* ``contact``: ``warn``/``alarm`` name the contact state (0 or 1) that
  raises that level; raise after ``on_delay`` in that state, clear after
  ``off_delay`` out of it.
* ``unreach`` (every channel, no rule needed): raised at ``unreach_after``
  consecutive failed reads, cleared by the first good read.

A temporary override replaces ``warn``/``alarm`` until its deadline, then the
base thresholds come back by themselves (checked on each sample). Alarm
states carry across overrides and reconfiguration; a level whose threshold
moved is re-judged on the next sample with the normal hysteresis and delays.
"""

WARN = 1
ALARM = 2
RAISED = "raised"
CLEARED = "cleared"
EVENT_KEYS = ("alias", "cond", "level", "state", "value", "threshold")

# Index of the fields of an event tuple, for readers that want names.
E_ALIAS = 0
E_COND = 1
E_LEVEL = 2
E_STATE = 3
E_VALUE = 4
E_THRESHOLD = 5

CONDS = ("hi", "lo", "leak", "contact")
UNREACH = "unreach"


class _Level:
    """State of one level (warn or alarm) of one rule."""

    def __init__(self):
        self.active = False
        self.since = None  # first sample of the current raise condition
        self.clr = None  # first sample of the current clear condition
        self.armed = True  # leak: next rising edge counts as an excursion
        self.edges = None  # leak: start times of recent excursions


class _Rule:
    """One threshold entry bound to a channel alias."""

    def __init__(self, alias, spec, t, unix_now):
        self.alias = alias
        self.cond = spec["cond"]
        self.levels = [_Level(), _Level()]
        self.last = None
        self.load(spec, t, unix_now)

    def load(self, spec, t, unix_now):
        self.hyst = spec.get("hyst") or 0
        self.on_delay = spec.get("on_delay") or 0
        self.off_delay = spec.get("off_delay") or 0
        self.count = spec.get("count") or 0
        self.window = spec.get("window") or 0
        self.base = (spec.get("warn"), spec.get("alarm"))
        self.until = None
        self.set_thr(self.base)
        ov = spec.get("override")
        # The override deadline is Unix time from the cloud; without a
        # synchronised clock we cannot tell whether it is over, and the
        # base thresholds are the safe side (overrides usually relax).
        if ov and unix_now is not None and ov["until"] > unix_now:
            self.until = t + (ov["until"] - unix_now)
            warn = ov.get("warn")
            alarm = ov.get("alarm")
            # An override only moves levels the base rule has, so the
            # expiry can never strand a raised level without a threshold.
            self.set_thr(
                (
                    self.base[0] if warn is None or self.base[0] is None else warn,
                    self.base[1] if alarm is None or self.base[1] is None else alarm,
                )
            )
        for lv in self.levels:
            if self.cond == "leak" and self.count:
                if lv.edges is None:
                    lv.edges = []
            else:
                lv.edges = None
                lv.armed = True

    def set_thr(self, thr):
        """Thresholds in force, and the clear limits past the hysteresis.

        Computed here, not per sample: float arithmetic allocates on
        MicroPython, comparisons do not.
        """
        self.thr = thr
        h = -self.hyst if self.cond in ("hi", "leak") else self.hyst
        self.off = tuple([None if x is None or self.cond == "contact" else x + h for x in thr])


class Evaluator:
    """Per-channel alarm state machines for one terminal.

    ``unreach_after``: consecutive failed reads that raise ``unreach``.
    Call :meth:`configure` with the thresholds before sampling; channels
    without rules still get the unreachable alarm.
    """

    def __init__(self, unreach_after=3):
        if unreach_after < 1:
            raise ValueError("unreach_after must be >= 1")
        self.unreach_after = unreach_after
        self._rules = {}  # alias -> list of _Rule
        self._fails = {}  # alias -> consecutive failed reads (only while failing)

    def configure(self, thresholds, aliases, t, unix_now=None):
        """Install ``thresholds`` (normalized config entries).

        ``aliases`` maps channel names to aliases; ``t`` is the current
        monotonic time and ``unix_now`` the synchronised Unix time or
        ``None`` (then overrides are not applied). Rules keep their alarm
        state when the same ``(channel, cond)`` is configured again; raised
        levels of rules or levels that disappeared are cleared, and those
        clear events are returned. Raises ``KeyError`` for a channel that
        has no alias (config validation prevents that).
        """
        old = {}
        for rules in self._rules.values():
            for r in rules:
                old[(r.alias, r.cond)] = r
        new = {}  # type: dict
        events = []
        for spec in thresholds:
            alias = aliases[spec["channel"]]
            key = (alias, spec["cond"])
            r = old.pop(key, None)
            if r is None:
                r = _Rule(alias, spec, t, unix_now)
            else:
                prev = r.thr
                r.load(spec, t, unix_now)
                for i in (1, 0):
                    if r.base[i] is None and r.levels[i].active:
                        r.levels[i] = _Level()
                        events.append((alias, r.cond, i + 1, CLEARED, r.last, prev[i]))
            rules = new.get(alias)
            if rules is None:
                new[alias] = rules = []
            rules.append(r)
        for r in old.values():
            for i in (1, 0):
                if r.levels[i].active:
                    events.append((r.alias, r.cond, i + 1, CLEARED, r.last, r.thr[i]))
        self._rules = new
        return events

    def sample(self, alias, value, t):
        """Feed one good reading; return the events it causes.

        Returns the empty tuple when nothing changed (the usual case), so a
        steady stream of samples allocates nothing here.
        """
        events = None  # type: list | None
        if alias in self._fails:
            if self._fails.pop(alias) >= self.unreach_after:
                events = [(alias, UNREACH, ALARM, CLEARED, value, self.unreach_after)]
        rules = self._rules.get(alias)
        if rules is None:
            return () if events is None else events
        for r in rules:
            r.last = value
            if r.until is not None and t >= r.until:
                r.until = None
                r.set_thr(r.base)
            thr = r.thr
            c0 = None if thr[0] is None else _step(r, 0, value, t)
            c1 = None if thr[1] is None else _step(r, 1, value, t)
            if c0 is None and c1 is None:
                continue
            if events is None:
                events = []
            # Clears go out alarm-first and raises warn-first, so a reader
            # replaying the events never sees ALARM without WARN.
            if c1 == CLEARED:
                events.append((alias, r.cond, ALARM, CLEARED, value, thr[1]))
            if c0 is not None:
                events.append((alias, r.cond, WARN, c0, value, thr[0]))
            if c1 == RAISED:
                events.append((alias, r.cond, ALARM, RAISED, value, thr[1]))
        return () if events is None else events

    def failed(self, alias, t):
        """Record a failed read of ``alias``; returns the events it causes."""
        n = self._fails.get(alias, 0) + 1
        self._fails[alias] = n
        if n == self.unreach_after:
            return [(alias, UNREACH, ALARM, RAISED, None, self.unreach_after)]
        return ()

    def active(self):
        """``[(alias, cond, level), ...]`` of every raised level, for status frames."""
        out = []
        for rules in self._rules.values():
            for r in rules:
                for i in (0, 1):
                    if r.levels[i].active:
                        out.append((r.alias, r.cond, i + 1))
        for alias, n in self._fails.items():
            if n >= self.unreach_after:
                out.append((alias, UNREACH, ALARM))
        return out


def _step(r, i, v, t):
    """Advance level ``i`` of rule ``r`` by one sample; return RAISED, CLEARED or None."""
    lv = r.levels[i]
    thr = r.thr[i]
    lim = r.off[i]  # the clear limit: threshold -/+ hysteresis
    cond = r.cond
    if cond == "lo":
        on = v <= thr
        off = v > lim
    elif cond == "contact":
        on = v == thr
        off = not on
    else:  # hi, leak
        on = v >= thr
        off = v < lim
    burst = False
    edges = lv.edges
    if edges is not None:
        if on and lv.armed:
            lv.armed = False
            if len(edges) >= r.count:
                edges.pop(0)
            edges.append(t)
        elif off:
            lv.armed = True
        while edges and t - edges[0] > r.window:
            edges.pop(0)
        burst = len(edges) >= r.count
    if not lv.active:
        if on:
            if lv.since is None:
                lv.since = t
            if t - lv.since < r.on_delay and not burst:
                return None
        elif not burst:
            lv.since = None
            return None
        lv.active = True
        lv.since = None
        lv.clr = None
        return RAISED
    if not off:
        lv.clr = None
        return None
    if lv.clr is None:
        lv.clr = t
    if t - lv.clr < r.off_delay or burst:
        return None
    lv.active = False
    lv.clr = None
    lv.since = None
    return CLEARED
