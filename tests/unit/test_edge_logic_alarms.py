"""Property tests of the terminal's alarm evaluator (CPython, hypothesis).

The MicroPython-compatible example tests are in tests/mpy/test_alarms.py;
these throw random signals at the evaluator and check the promises its
users rely on: events only on change, hysteresis against chatter, delays
honoured, levels nested, and the leakage rule matching an independent model.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.alarms import ALARM, CLEARED, RAISED, WARN, Evaluator

ALIASES = {"c": 0}

values = st.floats(min_value=-50, max_value=150, allow_nan=False, width=32)
steps = st.integers(min_value=1, max_value=120)


@st.composite
def signals(draw, value=values, max_size=200):
    """Strictly increasing sample times with values."""
    gaps = draw(st.lists(steps, min_size=1, max_size=max_size))
    t = 0
    out = []
    for g in gaps:
        t += g
        out.append((t, draw(value)))
    return out


@st.composite
def hi_lo_rules(draw):
    cond = draw(st.sampled_from(["hi", "lo"]))
    a = draw(st.floats(min_value=0, max_value=100, allow_nan=False, width=32))
    b = draw(st.floats(min_value=0, max_value=100, allow_nan=False, width=32))
    warn, alarm = (min(a, b), max(a, b)) if cond == "hi" else (max(a, b), min(a, b))
    return {
        "channel": "c",
        "cond": cond,
        "warn": warn,
        "alarm": alarm,
        "hyst": draw(st.floats(min_value=0, max_value=10, allow_nan=False, width=32)),
        "on_delay": draw(st.integers(0, 300)),
        "off_delay": draw(st.integers(0, 300)),
    }


def run(rule, signal, unreach_after=3):
    ev = Evaluator(unreach_after=unreach_after)
    assert ev.configure([rule], ALIASES, 0) == []
    out = []
    for t, v in signal:
        events = ev.sample(0, v, t)
        assert isinstance(events, (list, tuple))
        out.extend((t, e) for e in events)
    return ev, out


def replay(events):
    """Check the raise/clear alternation; return the final state per key."""
    state = {}
    for _, (alias, cond, level, st_, _v, _thr) in events:
        key = (alias, cond, level)
        assert st_ in (RAISED, CLEARED)
        assert state.get(key, CLEARED) != st_, "repeated %s for %s" % (st_, key)
        state[key] = st_
    return state


@settings(max_examples=300, deadline=None)
@given(hi_lo_rules(), signals())
def test_events_alternate_and_only_on_change(rule, signal):
    ev, events = run(rule, signal)
    state = replay(events)
    active = {(a, c, lv) for a, c, lv in ev.active()}
    assert active == {k for k, s in state.items() if s == RAISED}


@settings(max_examples=300, deadline=None)
@given(hi_lo_rules(), signals())
def test_alarm_level_never_raised_without_warning(rule, signal):
    _, events = run(rule, signal)
    state = {WARN: CLEARED, ALARM: CLEARED}
    for _, e in events:
        state[e[2]] = e[3]
        assert not (state[ALARM] == RAISED and state[WARN] == CLEARED), events


@settings(max_examples=300, deadline=None)
@given(hi_lo_rules(), signals())
def test_no_delay_matches_hysteresis_model(rule, signal):
    rule["on_delay"] = rule["off_delay"] = 0
    _, events = run(rule, signal)
    by_time = {}
    for t, e in events:
        by_time.setdefault(t, []).append(e)
    sign = 1 if rule["cond"] == "hi" else -1
    model = {WARN: False, ALARM: False}
    for t, v in signal:
        for level, thr in ((WARN, rule["warn"]), (ALARM, rule["alarm"])):
            was = model[level]
            on = sign * (v - thr) >= 0
            off = sign * (v - thr) < -rule["hyst"]
            model[level] = on or (was and not off)
            got = [e for e in by_time.get(t, []) if e[2] == level]
            if model[level] != was:
                assert got == [
                    (0, rule["cond"], level, RAISED if model[level] else CLEARED, v, thr)
                ]
            else:
                assert got == []


@settings(max_examples=300, deadline=None)
@given(hi_lo_rules(), signals())
def test_delays_are_honoured(rule, signal):
    _, events = run(rule, signal)
    sign = 1 if rule["cond"] == "hi" else -1
    for t_ev, (_, _, _, state, _, thr) in events:
        raising = state == RAISED
        delay = rule["on_delay"] if raising else rule["off_delay"]
        # the samples up to the event satisfy the condition back to a sample
        # at least `delay` seconds earlier
        run_start = None
        for t, v in signal:
            if t > t_ev:
                break
            d = sign * (v - thr)
            ok = d >= 0 if raising else d < -rule["hyst"]
            run_start = (run_start if run_start is not None else t) if ok else None
        assert run_start is not None and t_ev - run_start >= delay


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=1, max_value=100, allow_nan=False, width=32),
    st.floats(min_value=0.125, max_value=10, allow_nan=False, width=32),
    st.lists(st.floats(min_value=-0.49, max_value=0.49, allow_nan=False), min_size=2, max_size=300),
)
def test_hysteresis_prevents_chatter_on_noisy_signal(thr, hyst, noise):
    # noise of less than half the hysteresis around the threshold: after the
    # first raise the level must stay raised, whatever the noise does
    rule = {"channel": "c", "cond": "hi", "warn": thr, "hyst": hyst}
    signal = [(i, thr + n * hyst) for i, n in enumerate(noise)]
    _, events = run(rule, signal)
    assert len(events) <= 1
    assert all(e[3] == RAISED for _, e in events)


@settings(max_examples=200, deadline=None)
@given(signals(value=st.sampled_from([10.0, 20.0])))
def test_constant_signal_settles(signal):
    rule = {"channel": "c", "cond": "hi", "warn": 15.0, "on_delay": 30, "off_delay": 30}
    t_end = signal[-1][0]
    v_end = signal[-1][1]
    tail = [(t_end + 60 * i, v_end) for i in range(1, 5)]
    ev, _ = run(rule, signal + tail)
    assert ev.sample(0, v_end, t_end + 1000) == ()
    assert ev.active() == ([(0, "hi", WARN)] if v_end > 15 else [])


def leak_model(rule, signal):
    """Independent model of the leakage rule: ``[(t, RAISED|CLEARED)]`` of one level.

    Runs of "on" (>= level) and "off" (< level - hyst) samples are tracked
    continuously and restart at every state change; excursions are every
    rising edge into "on" after the value had been "off" (or at the start).
    """
    thr, hyst, k, w = rule["warn"], rule["hyst"], rule["count"], rule["window"]
    active = False
    armed = True
    edges = []
    on_since = off_since = None
    out = []
    for t, v in signal:
        on = v >= thr
        off = v < thr - hyst
        if on and armed:
            edges.append(t)
        armed = off or (armed and not on)
        burst = sum(1 for e in edges if t - e <= w) >= k
        on_since = (t if on_since is None else on_since) if on else None
        off_since = (t if off_since is None else off_since) if off else None
        if not active and ((on and t - on_since >= rule["on_delay"]) or burst):
            active = True
            out.append((t, RAISED))
            on_since = off_since = None
        elif active and off and t - off_since >= rule["off_delay"] and not burst:
            active = False
            out.append((t, CLEARED))
            on_since = off_since = None
    return out


@settings(max_examples=400, deadline=None)
@given(
    signals(value=st.sampled_from([0.0, 30.0, 47.0, 52.0, 80.0]), max_size=120),
    st.integers(0, 900),
    st.integers(0, 900),
    st.integers(1, 5),
    st.integers(60, 3600),
)
def test_leak_rule_matches_model(signal, on_delay, off_delay, count, window):
    rule = {
        "channel": "c",
        "cond": "leak",
        "warn": 50.0,
        "hyst": 5.0,
        "on_delay": on_delay,
        "off_delay": off_delay,
        "count": count,
        "window": window,
    }
    _, events = run(rule, signal)
    replay(events)
    assert [(t, e[3]) for t, e in events] == leak_model(rule, signal)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=100), st.integers(1, 6))
def test_unreachable_raises_once_and_clears_on_first_good_read(reads, n):
    ev = Evaluator(unreach_after=n)
    ev.configure([], ALIASES, 0)
    fails = 0
    raised = False
    for t, good in enumerate(reads):
        events = ev.sample(0, 1.0, t) if good else ev.failed(0, t)
        if good:
            expect = [(0, "unreach", ALARM, CLEARED, 1.0, n)] if raised else []
            raised = False
            fails = 0
        else:
            fails += 1
            expect = [(0, "unreach", ALARM, RAISED, None, n)] if fails == n else []
            raised = raised or fails == n
        assert list(events) == expect
