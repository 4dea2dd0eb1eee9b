"""The terminals' link to the broker is cut for several keepalives, then restored.

A TCP relay between the terminals and the broker's terminal listener is
closed (every connection dropped, the port refusing) while the terminals go
on sampling into their outboxes; the ingest stays connected. After the
link is back on the same port: every frame is stored exactly once, and
what was queued during the cut is delivered in its original order,
followed by the live stream.

The cloud's side of the outage: each terminal has an ``offline`` rule
shorter than the cut, the scheduler's alarm sweep runs throughout, and one
e-mail recipient (recoveries too) is registered. Like the agent, every
terminal publishes a birth stamped with the wall clock after each connect;
half of them also set the agent's last will (a death frame), the other
half none, as if their wills were lost: for those only the sweep can
notice the outage. Per terminal there must be exactly one ``offline``
alarm, raised during the cut and cleared after the link returned, and
exactly one ``raised`` and one ``cleared`` row in the notification
ledger; no other alarm.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cloud.models import (
    Alarm,
    AlarmCondition,
    AlarmState,
    Delivery,
    DeliveryChannel,
    NotificationTarget,
    Severity,
    Terminal,
    as_utc,
)
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker

N = F.profile(20, 100)
CUT_S = F.profile(12.0, 60.0)  # terminals' keepalive is 5 s: several missed pings
PERIOD = F.profile(0.1, 0.5)
OFFLINE_AFTER_S = 5  # the terminals' offline rule (on_delay_s): well inside the cut
SWEEP_S = 0.5  # the sweep's period (the scheduler's is 60 s, for limits of minutes)
WILLS = frozenset(F.tids(N)[::2])  # these set a last will; the others rely on the sweep


def configure_alarms(eng: sa.Engine, terminal_ids: list[str]) -> None:
    """An ``offline`` rule of OFFLINE_AFTER_S for every terminal, and one
    recipient for the whole customer that also wants recoveries."""
    with eng.begin() as conn:
        customer_id = conn.scalar(
            sa.select(Terminal.customer_id).where(Terminal.id == terminal_ids[0])
        )
        conn.execute(
            sa.insert(AlarmCondition),
            [
                {
                    "terminal_id": tid,
                    "channel": None,
                    "cond": "offline",
                    "on_delay_s": OFFLINE_AFTER_S,
                }
                for tid in terminal_ids
            ],
        )
        conn.execute(
            sa.insert(NotificationTarget).values(
                customer_id=customer_id,
                channel=DeliveryChannel.EMAIL,
                address="kanri@example.jp",
                min_severity=Severity.WARNING,
                notify_recovery=True,
            )
        )


def offline_terminals(eng: sa.Engine, *, cleared: bool) -> int:
    """Terminals with an open (or, with ``cleared``, a cleared) offline alarm."""
    state = Alarm.state == AlarmState.CLEARED if cleared else Alarm.state != AlarmState.CLEARED
    with eng.connect() as conn:
        return int(
            conn.scalar(
                sa.select(sa.func.count(sa.distinct(Alarm.terminal_id))).where(
                    Alarm.cond == "offline", state
                )
            )
            or 0
        )


def alarm_figures(eng: sa.Engine, cut_at: datetime, restored_at: datetime) -> dict[str, Any]:
    """Per terminal: its alarms and their ledger rows, judged against the outage."""
    with eng.connect() as conn:
        alarms = conn.execute(
            sa.select(
                Alarm.id,
                Alarm.terminal_id,
                Alarm.cond,
                Alarm.state,
                Alarm.raised_at,
                Alarm.cleared_at,
                Alarm.value,
            ).order_by(Alarm.id)
        ).all()
        ledger = conn.execute(
            sa.select(Delivery.alarm_id, Delivery.event).order_by(Delivery.id)
        ).all()
    events: dict[int | None, list[str]] = {}
    for alarm_id, event in ledger:
        events.setdefault(alarm_id, []).append(event)
    offline = [a for a in alarms if a.cond == "offline"]
    per_terminal: dict[str, list[Any]] = {tid: [] for tid in F.tids(N)}
    for a in offline:
        per_terminal[a.terminal_id].append(a)
    wrong = []
    for tid, rows in per_terminal.items():
        ok = (
            len(rows) == 1
            and rows[0].state == AlarmState.CLEARED
            and cut_at <= as_utc(rows[0].raised_at) <= restored_at
            and rows[0].cleared_at is not None
            and as_utc(rows[0].cleared_at) >= restored_at
            and events.get(rows[0].id) == ["raised", "cleared"]
            and (tid in WILLS or rows[0].value is not None)
        )  # no will: only the sweep
        if not ok:
            wrong.append(
                [
                    tid,
                    [
                        (
                            str(a.state),
                            str(a.raised_at),
                            str(a.cleared_at),
                            a.value,
                            events.get(a.id),
                        )
                        for a in rows
                    ],
                ]
            )
    raise_s = [(as_utc(a.raised_at) - cut_at).total_seconds() for a in offline]
    clear_s = [
        (as_utc(a.cleared_at) - restored_at).total_seconds()
        for a in offline
        if a.cleared_at is not None
    ]
    return {
        "offline_alarms": len(offline),
        "offline_raised_by_will": sum(1 for a in offline if a.value is None),
        "offline_raised_by_sweep": sum(1 for a in offline if a.value is not None),
        "offline_cleared": sum(1 for a in offline if a.state == AlarmState.CLEARED),
        "offline_raised_after_cut_s": [
            round(min(raise_s, default=0), 2),
            round(max(raise_s, default=0), 2),
        ],
        "offline_cleared_after_restore_s": [
            round(min(clear_s, default=0), 2),
            round(max(clear_s, default=0), 2),
        ],
        "ledger_raised": sum(
            e.count("raised") for i, e in events.items() if i in {a.id for a in offline}
        ),
        "ledger_cleared": sum(
            e.count("cleared") for i, e in events.items() if i in {a.id for a in offline}
        ),
        "ledger_rows": len(ledger),
        "other_alarms": [
            (a.terminal_id, a.cond, str(a.state)) for a in alarms if a.cond != "offline"
        ],
        "terminals_not_one_outage": wrong,
    }


def test_link_cut_then_restored_delivers_everything_in_order(
    broker: MosquittoBroker, sqlite_url: str, tmp_path: Path
) -> None:
    eng = F.engine(sqlite_url)
    configure_alarms(eng, F.tids(N))
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    observer = F.Observer(broker)
    link = F.CuttableLink(broker.ports["terminal"])
    fleet = F.Fleet(link.port, N, period=PERIOD, live_birth=True, will=WILLS)
    sweeper = F.AlarmSweeper(sqlite_url, SWEEP_S)
    try:
        fleet.wait_connected()
        fleet.start()
        S.wait_for(lambda: F.receipt_count(eng) >= N * 5, 30, "the stream to flow")
        sweeper.start()
        cut_at = datetime.now(UTC)  # before: the first wills land while cut() returns
        cut_until = time.monotonic() + CUT_S
        link.cut()
        # The link stays down CUT_S, and at least until the cloud reported
        # every terminal offline (the will at once, the sweep after the limit).
        S.wait_for(
            lambda: offline_terminals(eng, cleared=False) >= N,
            CUT_S + 60,
            "every terminal to be reported offline",
            0.2,
        )
        time.sleep(max(0.0, cut_until - time.monotonic()))  # the fault's duration
        link.restore()
        restored_at = datetime.now(UTC)
        restored = time.monotonic()
        try:
            S.wait_for(
                lambda: all(
                    t.offline and all(k in t.acked_at for k in t.offline) for t in fleet.terms
                ),
                120,
                "every terminal to deliver what it queued offline",
                0.02,
            )
        except AssertionError as err:
            late = [
                (t.tid, t.connected, t.connects, len(t.offline), len(t.pending))
                for t in fleet.terms
                if not (t.offline and all(k in t.acked_at for k in t.offline))
            ]
            raise AssertionError(
                f"{err}: (tid, connected, connects, offline, pending) "
                f"{late[:10]} ({len(late)} late)"
            ) from err
        recovery = time.monotonic() - restored
        S.wait_for(
            lambda: offline_terminals(eng, cleared=True) >= N,
            60,
            "every offline alarm to clear",
            0.2,
        )
        time.sleep(1.0)  # some live stream after the backlog, the sweep still running
        sweeper.stop()
        fleet.stop_generating()
        fleet.drain()
        total = len(fleet.generated())
        S.wait_for(lambda: F.receipt_count(eng) >= total, 60, f"all {total} frames")
        worker.stop()
    finally:
        sweeper.stop()
        fleet.close()
        link.cut()
        observer.close()
    try:
        alarms = alarm_figures(eng, cut_at, restored_at)
    finally:
        eng.dispose()
    figures = F.account(sqlite_url, fleet)
    out_of_order = []
    for t in fleet.terms:
        # The outbox's frames only: births and wills leave outside it.
        first = t.offline[0][2]
        expected = [k[2] for k in t.generated if k[2] >= first]
        wanted = set(expected)
        seqs = [s for s in F.first_arrivals(observer.order.get(t.tid, [])) if s in wanted]
        if seqs != expected:
            out_of_order.append(t.tid)
    figures.update(
        terminals=N,
        cut_s=CUT_S,
        queued_offline=sum(len(t.offline) for t in fleet.terms),
        reconnects=sum(t.connects - 1 for t in fleet.terms),
        recovery_s=round(recovery, 3),
        out_of_order_terminals=out_of_order,
        offline_after_s=OFFLINE_AFTER_S,
        sweep_s=SWEEP_S,
        terminals_with_will=len(WILLS),
        live_births=sum(len(t.live_births) for t in fleet.terms),
        sweep_runs=sweeper.runs,
        sweep_marked_offline=sweeper.marked_offline,
        sweep_errors=sweeper.errors[:5],
        **alarms,
    )
    F.Report("network_cut", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0, figures
    assert figures["queued_offline"] >= N * int(CUT_S / PERIOD) // 2, figures
    assert out_of_order == [], figures
    assert sweeper.errors == [], figures
    assert alarms["terminals_not_one_outage"] == [], figures
    assert alarms["offline_alarms"] == alarms["offline_cleared"] == N, figures
    assert alarms["ledger_raised"] == alarms["ledger_cleared"] == N, figures
    assert alarms["other_alarms"] == [], figures
