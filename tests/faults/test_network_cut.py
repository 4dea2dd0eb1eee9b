"""The terminals' link to the broker is cut for several seconds, then restored.

The terminals run the real agent (:class:`tests.support.faults.AgentFleet`).
Their connections go through TCP relays (:class:`tests.support.faults.CuttableLink`),
which are cut (every connection dropped, the port refusing) while the
terminals go on sampling into their outboxes; the ingest stays connected.
Half of the terminals lose their link loudly: the relay closes both sides,
the broker publishes their wills (death frames) at once. For the other half
the link dies silently: the broker's side stays open, so the broker notices
nothing and their wills come only when they connect again; until then only
the alarm sweep can notice them. After the links are back on the same
ports: every frame is stored exactly once, and what was queued during the
cut is delivered in its original order, followed by the live stream.

The cloud's side of the outage: each terminal has an ``offline`` rule
shorter than the cut, the scheduler's alarm sweep runs throughout, and one
e-mail recipient (recoveries too) is registered. Per terminal there must be
exactly one ``offline`` alarm, raised during the cut and cleared after the
link returned (by the birth the agent publishes after each connect), and
exactly one ``raised`` and one ``cleared`` row in the notification ledger;
no other alarm.
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
CUT_S = F.profile(12.0, 60.0)
OFFLINE_AFTER_S = 5  # the terminals' offline rule (on_delay_s): well inside the cut
SWEEP_S = 0.5  # the sweep's period (the scheduler's is 60 s, for limits of minutes)
WILLS = frozenset(F.tids(N)[::2])  # links cut loudly: wills at the cut; the others' come late


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
    loud = F.CuttableLink(broker.ports["terminal"])
    silent = F.CuttableLink(broker.ports["terminal"])
    ports = [loud.port if tid in WILLS else silent.port for tid in F.tids(N)]
    fleet = F.AgentFleet(ports, N, tmp_path / "terminals")
    sweeper = F.AlarmSweeper(sqlite_url, SWEEP_S)
    try:
        fleet.start()
        fleet.wait_connected()
        S.wait_for(lambda: F.receipt_count(eng) >= N * 5, 30, "the stream to flow")
        sweeper.start()
        cut_at = datetime.now(UTC)  # before: the first wills land while cut() returns
        cut = time.monotonic()
        loud.cut()
        silent.cut(silent=True)
        # The link stays down CUT_S, and at least until the cloud reported
        # every terminal offline (the sweep, after the rule's limit).
        S.wait_for(
            lambda: offline_terminals(eng, cleared=False) >= N,
            CUT_S + 60,
            "every terminal to be reported offline",
            0.2,
        )
        time.sleep(max(0.0, cut + CUT_S - time.monotonic()))  # the fault's duration
        loud.restore()
        silent.restore()
        restored_at = datetime.now(UTC)
        restored = time.monotonic()
        offline = fleet.queued_between(cut, restored)
        try:
            S.wait_for(
                lambda: set(offline) <= F.receipt_keys(eng),
                120,
                "every terminal to deliver what it queued offline",
                0.05,
            )
        except AssertionError as err:
            late = sorted({k[0] for k in set(offline) - F.receipt_keys(eng)})
            raise AssertionError(f"{err}: late {late}\n{fleet.term(late[0]).log()}") from err
        recovery = time.monotonic() - restored
        S.wait_for(
            lambda: offline_terminals(eng, cleared=True) >= N,
            60,
            "every offline alarm to clear",
            0.2,
        )
        time.sleep(1.0)  # some live stream after the backlog, the sweep still running
        sweeper.stop()
        settle_s = F.settle(eng, fleet.generated(), 60)
        stopping = time.monotonic()  # each agent's will goes at its shutdown
        fleet.stop()
        worker.stop()
    finally:
        sweeper.stop()
        fleet.stop()
        loud.cut()
        silent.cut()
        observer.close()
    try:
        alarms = alarm_figures(eng, cut_at, restored_at)
    finally:
        eng.dispose()
    figures = F.account(sqlite_url, fleet)
    out_of_order = []
    for t in fleet.terms:
        # The outbox's frames from the first one queued offline on; live
        # births and wills leave outside it.
        first = min(k[2] for k in offline if k[0] == t.tid)
        arrived = set(observer.order.get(t.tid, []))
        expected = [k[2] for k in t.generated() if k[2] >= first and k[2] in arrived]
        wanted = set(expected)
        seqs = [s for s in F.first_arrivals(observer.order.get(t.tid, [])) if s in wanted]
        if seqs != expected:
            out_of_order.append(t.tid)
    deaths = observer.deaths
    figures.update(
        terminals=N,
        cut_s=CUT_S,
        wills_during_cut=sorted(
            t for t, ds in deaths.items() if any(cut <= d < restored for d in ds)
        ),
        wills_after_return=sorted(
            t for t, ds in deaths.items() if any(restored <= d < stopping for d in ds)
        ),
        queued_offline=len(offline),
        recovery_s=round(recovery, 3),
        settle_s=round(settle_s, 2),
        out_of_order_terminals=out_of_order,
        offline_after_s=OFFLINE_AFTER_S,
        sweep_s=SWEEP_S,
        terminals_cut_loudly=len(WILLS),
        sweep_runs=sweeper.runs,
        sweep_marked_offline=sweeper.marked_offline,
        sweep_errors=sweeper.errors[:5],
        **fleet.resend_figures(),
        **alarms,
    )
    F.Report("network_cut", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0, figures
    # about one sample a second per terminal while the link was down
    assert figures["queued_offline"] >= N * int(CUT_S) // 2, figures
    assert out_of_order == [], figures
    # loud cuts: wills at once; silent ones: only at the takeover after the return
    assert figures["wills_during_cut"] == sorted(WILLS), figures
    assert figures["wills_after_return"] == sorted(set(F.tids(N)) - WILLS), figures
    assert sweeper.errors == [], figures
    assert alarms["terminals_not_one_outage"] == [], figures
    assert alarms["offline_alarms"] == alarms["offline_cleared"] == N, figures
    assert alarms["ledger_raised"] == alarms["ledger_cleared"] == N, figures
    assert alarms["other_alarms"] == [], figures
