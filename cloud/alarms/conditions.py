"""Conditions the cloud decides itself, evaluated by a periodic sweep.

- ``offline``: no frame for ``on_delay_s`` of the terminal's ``offline``
  rule, else :attr:`AlarmPolicy.offline_after_s`. A last will
  (:func:`cloud.alarms.engine.on_frame`) shows the terminal offline at once;
  its alarm too waits for the delay, counted from the last frame;
- ``stale`` (opt-in per channel with an enabled ``stale`` rule): no sample
  in the window, or every sample in it equal; window = the rule's
  ``on_delay_s``, else :attr:`AlarmPolicy.stale_after_s`;
- ``demand``: the 30-minute demand prediction (:mod:`cloud.alarms.demand`)
  above the contracted demand. Levels: the terminal's ``demand`` rule
  (``warn``/``alarm`` in kW, overrides honoured) else the customer's
  ``contracted_demand_kw`` as the warning level. The rule's ``channel``
  names the energy counter; without it the first ``energy`` channel is used.
- reminders for unacknowledged alarms (:func:`cloud.alarms.engine.remind_due`).

:func:`sweep` owns its session's transactions: it commits after each
terminal, so a row lock is never held across the whole sweep and one bad
terminal cannot roll back the others.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.alarms import demand
from cloud.alarms.engine import (
    DEMAND,
    OFFLINE,
    STALE,
    Context,
    clear_condition,
    lock_terminal,
    mark_offline,
    raise_condition,
    remind_due,
)
from cloud.alarms.policy import DEFAULT_POLICY, AlarmPolicy
from cloud.errors import CloudError
from cloud.models import (
    Alarm,
    AlarmCondition,
    Channel,
    Connectivity,
    Customer,
    Severity,
    Terminal,
    as_utc,
)
from cloud.timeseries import Point, TimeSeriesStore

log = logging.getLogger(__name__)

_ENERGY_FACTOR = {"wh": 0.001, "kwh": 1.0, "mwh": 1000.0}
_POWER_FACTOR = {"w": 0.001, "kw": 1.0, "mw": 1000.0}
# A power reading older than this (relative to the newest energy sample)
# is not "the current power"; the energy counter's slope is used instead.
_POWER_FRESH_S = 300


@dataclass
class SweepResult:
    offline: int = 0
    stale_checked: int = 0
    demand_checked: int = 0
    reminders: int = 0


def sweep(
    session: Session,
    now: datetime,
    store: TimeSeriesStore | None = None,
    policy: AlarmPolicy = DEFAULT_POLICY,
) -> SweepResult:
    """Evaluate the cloud-side conditions at ``now``; the scheduler calls it
    every minute. ``store`` is the site's time-series store; without it the
    stale and demand conditions (which read samples) are not evaluated and a
    warning says so. Commits per terminal (see the module docstring)."""
    now = as_utc(now)
    result = SweepResult()
    result.offline = sweep_offline(session, now, policy)
    if store is not None:
        result.stale_checked = sweep_stale(session, store, now, policy)
        result.demand_checked = sweep_demand(session, store, now, policy)
    elif _has_store_conditions(session):
        log.warning("sweep without a time-series store: stale and demand not evaluated")
    result.reminders = remind_due(session, now, policy)
    session.commit()
    return result


def sweep_offline(session: Session, now: datetime, policy: AlarmPolicy = DEFAULT_POLICY) -> int:
    """Mark terminals offline whose last frame is older than their limit."""
    rules = {
        r.terminal_id: r
        for r in session.scalars(
            sa.select(AlarmCondition).where(
                AlarmCondition.cond == OFFLINE, AlarmCondition.channel.is_(None)
            )
        )
    }
    limits = [r.on_delay_s for r in rules.values() if r.on_delay_s]
    shortest = min([policy.offline_after_s, *limits])
    # Offline already (a last will) but not alarmed since: the will only
    # marked it, the alarm is ours to raise. An alarm raised since, even one
    # cleared by hand, is not raised again until the terminal comes back.
    alarmed_since = (
        sa.select(Alarm.id)
        .where(
            Alarm.terminal_id == Terminal.id,
            Alarm.cond == OFFLINE,
            Alarm.channel.is_(None),
            Alarm.raised_at >= Terminal.connectivity_since,
        )
        .exists()
    )
    suspects = session.scalars(
        sa.select(Terminal.id).where(
            sa.or_(Terminal.connectivity != Connectivity.OFFLINE, ~alarmed_since),
            Terminal.last_seen_at.is_not(None),
            Terminal.last_seen_at <= now - timedelta(seconds=shortest),
        )
    ).all()
    session.commit()
    marked = 0
    for tid in suspects:
        rule = rules.get(tid)
        limit = rule.on_delay_s if rule is not None and rule.on_delay_s else policy.offline_after_s
        terminal = session.get(Terminal, tid)
        if terminal is None:
            continue
        lock_terminal(session, terminal)
        session.refresh(terminal)  # the ingest may have heard from it meanwhile
        last = terminal.last_seen_at
        if last is not None and (
            terminal.connectivity != Connectivity.OFFLINE or not _alarmed_since(session, terminal)
        ):
            silent = (now - last).total_seconds()
            if silent >= limit:
                mark_offline(session, terminal, now, silent, policy)
                marked += 1
        session.commit()
    return marked


def _alarmed_since(session: Session, terminal: Terminal) -> bool:
    """An offline alarm was raised since the terminal went offline."""
    since = terminal.connectivity_since
    stmt = sa.select(Alarm.id).where(
        Alarm.terminal_id == terminal.id, Alarm.cond == OFFLINE, Alarm.channel.is_(None)
    )
    if since is not None:
        stmt = stmt.where(Alarm.raised_at >= since)
    return session.scalars(stmt.limit(1)).first() is not None


def sweep_stale(
    session: Session, store: TimeSeriesStore, now: datetime, policy: AlarmPolicy = DEFAULT_POLICY
) -> int:
    """Raise or clear ``stale`` on every channel with an enabled stale rule."""
    rules: dict[str, list[AlarmCondition]] = defaultdict(list)
    for rule in session.scalars(
        sa.select(AlarmCondition)
        .where(
            AlarmCondition.cond == STALE,
            AlarmCondition.enabled.is_(True),
            AlarmCondition.channel.is_not(None),
        )
        .order_by(AlarmCondition.terminal_id, AlarmCondition.id)
    ):
        rules[rule.terminal_id].append(rule)
    session.commit()
    checked = 0
    for tid, channel_rules in rules.items():
        terminal = session.get(Terminal, tid)
        if terminal is None or terminal.connectivity == Connectivity.OFFLINE:
            continue  # an offline terminal is one alarm, not one per channel
        try:
            verdicts = [(r, _stale(store, tid, r, now, policy)) for r in channel_rules]
        except CloudError as err:
            log.warning("stale check of %s skipped: %s", tid, err)
            continue
        lock_terminal(session, terminal)
        ctx = Context(now, False, policy)
        for rule, (is_stale, value, window) in verdicts:
            assert rule.channel is not None
            if is_stale:
                raise_condition(
                    session,
                    terminal,
                    rule.channel,
                    STALE,
                    severity=Severity.WARNING,
                    value=value,
                    threshold=float(window),
                    ctx=ctx,
                )
            else:
                clear_condition(session, terminal, rule.channel, STALE, value=value, ctx=ctx)
            checked += 1
        session.commit()
    return checked


def sweep_demand(
    session: Session, store: TimeSeriesStore, now: datetime, policy: AlarmPolicy = DEFAULT_POLICY
) -> int:
    """Evaluate the demand prediction of every terminal that has demand levels."""
    rules = {
        r.terminal_id: r
        for r in session.scalars(sa.select(AlarmCondition).where(AlarmCondition.cond == DEMAND))
    }
    contracted = session.scalars(
        sa.select(Terminal.id)
        .join(Customer, Terminal.customer_id == Customer.id)
        .where(Customer.contracted_demand_kw.is_not(None), Customer.active.is_(True))
    ).all()
    session.commit()
    checked = 0
    for tid in sorted(set(contracted) | set(rules)):
        terminal = session.get(Terminal, tid)
        if terminal is None:
            continue
        rule = rules.get(tid)
        if rule is not None and not rule.enabled:
            continue
        customer = terminal.customer
        if rule is not None:
            warn, alarm = rule.levels(now)
        else:
            warn, alarm = (customer.contracted_demand_kw if customer else None), None
        if warn is None and alarm is None:
            continue
        try:
            evaluated = _predict(session, store, terminal, rule, now=now, policy=policy)
        except CloudError as err:
            log.warning("demand check of %s skipped: %s", tid, err)
            continue
        if evaluated is None:
            continue
        channel, predicted = evaluated
        lock_terminal(session, terminal)
        ctx = Context(now, False, policy)
        hysteresis = rule.hysteresis if rule is not None else 0.0
        if alarm is not None and predicted > alarm:
            raise_condition(
                session,
                terminal,
                channel,
                DEMAND,
                severity=Severity.ALARM,
                value=predicted,
                threshold=alarm,
                ctx=ctx,
            )
        elif warn is not None and predicted > warn:
            raise_condition(
                session,
                terminal,
                channel,
                DEMAND,
                severity=Severity.WARNING,
                value=predicted,
                threshold=warn,
                ctx=ctx,
            )
        else:
            lowest = min(x for x in (warn, alarm) if x is not None)
            # Between the level and level - hysteresis an open alarm stays as it is.
            if predicted <= lowest - hysteresis:
                clear_condition(session, terminal, channel, DEMAND, value=predicted, ctx=ctx)
        checked += 1
        session.commit()
    return checked


# -- helpers ---------------------------------------------------------------------


def _has_store_conditions(session: Session) -> bool:
    has_rule = session.scalar(
        sa.select(sa.func.count())
        .select_from(AlarmCondition)
        .where(AlarmCondition.cond.in_((STALE, DEMAND)), AlarmCondition.enabled.is_(True))
    )
    has_contract = session.scalar(
        sa.select(sa.func.count())
        .select_from(Customer)
        .where(Customer.contracted_demand_kw.is_not(None))
    )
    return bool(has_rule or has_contract)


def _stale(
    store: TimeSeriesStore, tid: str, rule: AlarmCondition, now: datetime, policy: AlarmPolicy
) -> tuple[bool, float | None, int]:
    """(stale?, newest value, window seconds) of the rule's channel."""
    assert rule.channel is not None
    window = rule.on_delay_s or policy.stale_after_s
    newest = store.latest(tid).get(rule.channel)
    start = now - timedelta(seconds=window)
    if newest is None or newest.time <= start:
        return True, (newest.value if newest else None), window
    # Half-open ranges: one second past now includes a sample taken at now.
    buckets = store.aggregate(tid, rule.channel, start, now + timedelta(seconds=1), window)
    count = sum(b.count for b in buckets)
    unchanged = count >= 2 and min(b.min for b in buckets) == max(b.max for b in buckets)
    return unchanged, newest.value, window


def _predict(
    session: Session,
    store: TimeSeriesStore,
    terminal: Terminal,
    rule: AlarmCondition | None,
    *,
    now: datetime,
    policy: AlarmPolicy,
) -> tuple[str, float] | None:
    """(energy channel, predicted kW), or None when the data cannot tell yet."""
    channels = session.scalars(
        sa.select(Channel)
        .where(Channel.terminal_id == terminal.id, Channel.retired_at.is_(None))
        .order_by(Channel.alias)
    ).all()
    energy = _pick(channels, "energy", rule.channel if rule is not None else None)
    if energy is None:
        return None
    power = _pick_power(channels, energy.name)
    zone = terminal.customer.zone if terminal.customer else demand.JST
    start, _end = demand.period_of(now, zone)
    points = store.query(
        terminal.id,
        energy.name,
        start - timedelta(minutes=10),
        now + timedelta(seconds=1),
        max_points=20_000,
    ).points
    in_period = [p for p in points if p.time > start]
    if not in_period:
        return None
    before = [p for p in points if p.time <= start]
    base = before[-1] if before else in_period[0]
    last = in_period[-1]
    e_factor = _ENERGY_FACTOR.get(energy.unit.lower(), 1.0)
    used = (last.value - base.value) * e_factor
    if base.time > start and last.ts > base.ts:
        # The period's first minutes are missing: assume they ran at the same rate.
        used *= (last.time - start).total_seconds() / (last.ts - base.ts)
    elapsed = min(float(demand.PERIOD_S), (last.time - start).total_seconds())
    if elapsed < policy.demand_min_elapsed_s or used < 0:
        return None  # too early to judge, or the counter was reset
    kw = _current_kw(store, terminal.id, power, last=last, points=points, e_factor=e_factor)
    if kw is None:
        return None
    return energy.name, demand.predict_kw(used, kw, elapsed)


def _current_kw(
    store: TimeSeriesStore,
    tid: str,
    power: Channel | None,
    *,
    last: Point,
    points: Sequence[Point],
    e_factor: float,
) -> float | None:
    """Power now: a fresh reading of the power channel, else the slope of
    the energy counter over its last two samples."""
    if power is not None:
        p = store.latest(tid).get(power.name)
        if p is not None and p.ts >= last.ts - _POWER_FRESH_S:
            return p.value * _POWER_FACTOR.get(power.unit.lower(), 1.0)
    if len(points) >= 2:
        a, b = points[-2], points[-1]
        if b.ts > a.ts:
            return (b.value - a.value) * e_factor * 3600 / (b.ts - a.ts)
    return None


def _pick(channels: Sequence[Channel], kind: str, name: str | None) -> Channel | None:
    for ch in channels:
        if (name is not None and ch.name == name) or (name is None and ch.kind == kind):
            return ch
    return None


def _pick_power(channels: Sequence[Channel], energy_name: str) -> Channel | None:
    """The power channel of the same meter ("pm1.kw" for "pm1.kwh"), else the first."""
    prefix = energy_name.rsplit(".", 1)[0] if "." in energy_name else None
    powers = [c for c in channels if c.kind == "power"]
    for ch in powers:
        if prefix is not None and ch.name.startswith(prefix + "."):
            return ch
    return powers[0] if powers else None
