"""Alarm evaluator: runs under CPython (pytest) and real MicroPython."""

from edge.alarms import ALARM, CLEARED, RAISED, WARN, Evaluator

ALIASES = {"leak1.ior": 0, "th.t": 1, "di.di1": 2, "pm.v": 3}


def make(*rules, unreach_after=3, t=0, unix_now=None):
    ev = Evaluator(unreach_after=unreach_after)
    assert ev.configure(list(rules), ALIASES, t, unix_now) == []
    return ev


def feed(ev, alias, series):
    """Feed ``[(t, value), ...]``; return every event with its time."""
    out = []
    for t, v in series:
        for e in ev.sample(alias, v, t):
            out.append((t,) + e)
    return out


def hi(**kw):
    spec = {"channel": "th.t", "cond": "hi", "warn": 30.0, "alarm": 40.0}
    spec.update(kw)
    return spec


def test_hi_raise_and_clear_with_hysteresis():
    ev = make(hi(hyst=2.0))
    got = feed(ev, 1, [(0, 25.0), (1, 30.0), (2, 29.0), (3, 28.5), (4, 27.9), (5, 31.0)])
    assert got == [
        (1, 1, "hi", WARN, RAISED, 30.0, 30.0),
        (4, 1, "hi", WARN, CLEARED, 27.9, 30.0),
        (5, 1, "hi", WARN, RAISED, 31.0, 30.0),
    ]


def test_events_only_on_change():
    ev = make(hi())
    assert ev.sample(1, 35.0, 0) == [(1, "hi", WARN, RAISED, 35.0, 30.0)]
    for t in range(1, 50):
        assert ev.sample(1, 35.0 + (t % 3), t) == ()
    assert ev.sample(1, 10.0, 50) == [(1, "hi", WARN, CLEARED, 10.0, 30.0)]
    for t in range(51, 60):
        assert not ev.sample(1, 10.0, t)


def test_escalation_and_deescalation():
    ev = make(hi(hyst=1.0))
    assert ev.sample(1, 35.0, 0) == [(1, "hi", WARN, RAISED, 35.0, 30.0)]
    assert ev.sample(1, 41.0, 1) == [(1, "hi", ALARM, RAISED, 41.0, 40.0)]
    # back under the alarm level but inside its hysteresis band: no change
    assert ev.sample(1, 39.5, 2) == ()
    assert ev.sample(1, 38.0, 3) == [(1, "hi", ALARM, CLEARED, 38.0, 40.0)]
    assert ev.active() == [(1, "hi", WARN)]
    assert ev.sample(1, 20.0, 4) == [(1, "hi", WARN, CLEARED, 20.0, 30.0)]
    assert ev.active() == []


def test_jump_past_both_levels_orders_events():
    ev = make(hi())
    assert ev.sample(1, 50.0, 0) == [
        (1, "hi", WARN, RAISED, 50.0, 30.0),
        (1, "hi", ALARM, RAISED, 50.0, 40.0),
    ]
    assert ev.sample(1, 0.0, 1) == [
        (1, "hi", ALARM, CLEARED, 0.0, 40.0),
        (1, "hi", WARN, CLEARED, 0.0, 30.0),
    ]


def test_on_delay_needs_the_condition_to_hold():
    ev = make(hi(alarm=None, on_delay=10))
    got = feed(ev, 1, [(0, 31.0), (5, 31.0), (6, 29.0), (7, 31.0), (16, 31.0), (17, 31.0)])
    assert got == [(17, 1, "hi", WARN, RAISED, 31.0, 30.0)]


def test_off_delay_needs_the_clear_to_hold():
    ev = make(hi(alarm=None, off_delay=10))
    got = feed(ev, 1, [(0, 31.0), (1, 20.0), (5, 31.0), (6, 20.0), (15, 20.0), (16, 20.0)])
    assert got == [(0, 1, "hi", WARN, RAISED, 31.0, 30.0), (16, 1, "hi", WARN, CLEARED, 20.0, 30.0)]


def test_lo_condition_mirrors_hi():
    ev = make({"channel": "pm.v", "cond": "lo", "warn": 95.0, "alarm": 90.0, "hyst": 1.0})
    series = [(0, 100.0), (1, 95.0), (2, 89.0), (3, 90.5), (4, 91.5), (5, 95.5), (6, 96.5)]
    got = feed(ev, 3, series)
    assert got == [
        (1, 3, "lo", WARN, RAISED, 95.0, 95.0),
        (2, 3, "lo", ALARM, RAISED, 89.0, 90.0),
        (4, 3, "lo", ALARM, CLEARED, 91.5, 90.0),
        (6, 3, "lo", WARN, CLEARED, 96.5, 95.0),
    ]


def leak(**kw):
    spec = {
        "channel": "leak1.ior",
        "cond": "leak",
        "warn": 50.0,
        "hyst": 5.0,
        "on_delay": 600,
        "count": 3,
        "window": 3600,
    }
    spec.update(kw)
    return spec


def test_leak_sustained_above_level():
    ev = make(leak())
    series = [(t, 60.0) for t in range(0, 601, 60)]
    got = feed(ev, 0, series)
    assert got == [(600, 0, "leak", WARN, RAISED, 60.0, 50.0)]


def test_leak_repeated_short_excursions_within_window():
    ev = make(leak())
    # three 1-minute excursions, 20 minutes apart: the third one raises
    series = []
    for start in (0, 1200, 2400):
        series += [(start, 10.0), (start + 60, 70.0), (start + 120, 10.0)]
    got = feed(ev, 0, series)
    assert got == [(2460, 0, "leak", WARN, RAISED, 70.0, 50.0)]
    # the alarm holds while 3 excursions (rising at 60, 1260, 2460) lie
    # within the window, and clears once the first one has left it
    assert not feed(ev, 0, [(3000, 10.0), (3660, 10.0)])
    got = feed(ev, 0, [(3661, 10.0)])
    assert got == [(3661, 0, "leak", WARN, CLEARED, 10.0, 50.0)]


def test_leak_excursions_outside_window_do_not_count():
    ev = make(leak())
    series = []
    for start in (0, 2000, 4000, 6000):
        series += [(start, 10.0), (start + 60, 70.0), (start + 120, 10.0)]
    assert feed(ev, 0, series) == []


def test_leak_noise_on_one_excursion_counts_once():
    ev = make(leak())
    # wobbling around the level without falling below level - hyst is one excursion
    series = [(0, 10.0)] + [(60 + 10 * i, 50.5 if i % 2 else 49.0) for i in range(30)]
    series.append((400, 10.0))
    assert feed(ev, 0, series) == []


def test_contact_alarm_state_with_on_delay():
    ev = make({"channel": "di.di1", "cond": "contact", "alarm": 0, "on_delay": 5})
    got = feed(ev, 2, [(0, 1), (1, 0), (3, 1), (4, 0), (8, 0), (9, 0), (10, 1)])
    assert got == [(9, 2, "contact", ALARM, RAISED, 0, 0), (10, 2, "contact", ALARM, CLEARED, 1, 0)]


def test_sensor_unreachable_after_n_failures_clears_on_first_good_read():
    ev = make(hi(), unreach_after=3)
    assert ev.failed(1, 0) == ()
    assert ev.failed(1, 1) == ()
    assert ev.failed(1, 2) == [(1, "unreach", ALARM, RAISED, None, 3)]
    assert ev.failed(1, 3) == ()
    assert ev.active() == [(1, "unreach", ALARM)]
    assert ev.sample(1, 20.0, 4) == [(1, "unreach", ALARM, CLEARED, 20.0, 3)]
    assert ev.sample(1, 20.0, 5) == ()


def test_failures_below_n_are_forgotten_by_a_good_read():
    ev = make(unreach_after=2)
    assert ev.failed(0, 0) == ()
    assert ev.sample(0, 1.0, 1) == ()
    assert ev.failed(0, 2) == ()
    assert ev.failed(0, 3) == [(0, "unreach", ALARM, RAISED, None, 2)]


def test_override_applies_and_reverts_by_itself():
    rule = hi(alarm=None, override={"warn": 35.0, "until": 1700000100})
    ev = make(rule, t=1000, unix_now=1700000000)
    assert ev.sample(1, 32.0, 1000) == ()  # overridden level is 35
    assert ev.sample(1, 32.0, 1099) == ()
    # at the deadline the base level (30) is back and the same value raises
    assert ev.sample(1, 32.0, 1100) == [(1, "hi", WARN, RAISED, 32.0, 30.0)]


def test_expired_or_unsynced_override_is_not_applied():
    rule = hi(alarm=None, override={"warn": 35.0, "until": 1700000100})
    ev = make(rule, t=0, unix_now=1700000200)
    assert ev.sample(1, 32.0, 0) == [(1, "hi", WARN, RAISED, 32.0, 30.0)]
    ev = make(rule, t=0, unix_now=None)
    assert ev.sample(1, 32.0, 0) == [(1, "hi", WARN, RAISED, 32.0, 30.0)]


def test_reconfigure_keeps_state_and_clears_removed_rules():
    ev = make(hi())
    assert len(ev.sample(1, 45.0, 0)) == 2
    # same rule, new thresholds: state kept, no duplicate raise
    assert ev.configure([hi(warn=31.0, alarm=41.0)], ALIASES, 1) == []
    assert ev.sample(1, 45.0, 2) == ()
    # alarm level removed: its raise is cleared; warn stays
    assert ev.configure([hi(alarm=None)], ALIASES, 3) == [(1, "hi", ALARM, CLEARED, 45.0, 41.0)]
    # rule removed entirely: the warn clears
    assert ev.configure([], ALIASES, 4) == [(1, "hi", WARN, CLEARED, 45.0, 30.0)]
    assert ev.active() == []


def test_unknown_alias_is_quiet():
    ev = make(hi())
    assert ev.sample(9, 1000.0, 0) == ()


def test_events_are_protocol_alarm_frames():
    from edge.alarms import EVENT_KEYS
    from protocol import frames

    ev = make(hi(), {"channel": "di.di1", "cond": "contact", "warn": 1})
    events = list(ev.sample(1, 41.5, 0)) + list(ev.sample(2, 1, 0)) + list(ev.failed(3, 0))
    events += list(ev.failed(3, 1)) + list(ev.failed(3, 2))
    assert len(events) == 4
    for seq, e in enumerate(events):
        frame = {
            "type": "alarm",
            "tid": "T0001",
            "boot": 1,
            "seq": seq,
            "ts": 1767225600,
            "unsynced": False,
        }
        for i, key in enumerate(EVENT_KEYS):  # zip(strict=) is not in MicroPython
            frame[key] = e[i]
        back = frames.decode(frames.encode(frame))
        assert tuple(back[k] for k in EVENT_KEYS) == e


def test_unchanged_samples_allocate_nothing():
    import gc

    ev = make(
        hi(hyst=1.0, on_delay=60, off_delay=60),
        {
            "channel": "leak1.ior",
            "cond": "leak",
            "warn": 30.0,
            "alarm": 40.0,
            "hyst": 1.0,
            "on_delay": 60,
            "count": 3,
            "window": 3600,
        },
    )
    values = (10.0, 20.0)
    for t in range(3):
        ev.sample(0, values[0], t)
        ev.sample(1, values[1], t)
    if not hasattr(gc, "mem_alloc"):  # CPython boxes every number anyway
        assert ev.sample(1, values[1], 3) == ()
        return
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for t in range(3, 203):
            ev.sample(0, values[0], t)
            ev.sample(1, values[1], t)
        grown = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert grown == 0, grown
