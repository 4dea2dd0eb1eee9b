"""A terminal whose clock is a day ahead, then synchronised again.

The terminals run the real agent (:class:`tests.support.faults.AgentFleet`).
One of them boots with its RTC 24 h ahead and its NTP server unreachable;
its frames say so (the ``unsynced`` flag, as the agent sets it until a clock
sync succeeds). Then its NTP server answers again and the cloud sends it
``resync_clock`` (the operator's remote command, as the web site sends it);
it sets its clock back by a day and the flag drops. The others set their
clocks by NTP at boot. Expected: every sample stored under the terminal's
own timestamps (the skewed ones too), nobody's values overwritten, the
``clock`` alarm raised for that terminal only, and cleared once its frames
say synchronised.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from cloud.models import Alarm, AlarmState
from cloud.services.commands import command_frame
from protocol import frames, topics
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker

N = F.profile(20, 100)
DAY = 86400
SKEWED = "F000"


def clock_alarms(eng: sa.Engine) -> list[tuple[str, AlarmState]]:
    with eng.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(
                sa.select(Alarm.terminal_id, Alarm.state).where(Alarm.cond == "clock")
            )
        ]


def test_day_of_clock_skew_is_flagged_and_overwrites_nothing(
    broker: MosquittoBroker, sqlite_url: str, tmp_path: Path
) -> None:
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    fleet = F.AgentFleet(broker.ports["terminal"], N, tmp_path / "terminals", skew={SKEWED: DAY})
    eng = F.engine(sqlite_url)
    skewed = fleet.term(SKEWED)
    web = broker.client("service", "web", F.WEB_PASSWORD, client_id="faults-web")
    try:
        fleet.start()
        fleet.wait_connected()
        S.wait_for(
            lambda: sum(1 for k in F.receipt_keys(eng) if k[0] == SKEWED) >= 10,
            60,
            "the skewed stream",
        )
        S.wait_for(lambda: clock_alarms(eng) != [], 30, "the clock alarm of the skewed terminal")
        raised = clock_alarms(eng)
        skewed.hal.ntp_up = True  # its NTP server answers again
        web.connect_ok()
        now = datetime.now(UTC)
        web.publish(
            topics.downlink(SKEWED, "cmd"), command_frame(SKEWED, 1, "resync_clock", {}, now)
        )
        S.wait_for(
            lambda: clock_alarms(eng) == [(SKEWED, AlarmState.CLEARED)],
            30,
            f"the clock alarm to clear; {SKEWED}:\n{skewed.log()}",
        )
        synced_at = time.monotonic()
        S.wait_for(lambda: time.monotonic() - synced_at >= 3, 10, "some synchronised stream")
        settle_s = F.settle(eng, fleet.generated(), 60)
        fleet.stop()
        worker.stop()
        alarms = clock_alarms(eng)
    finally:
        web.close()
        fleet.stop()
        eng.dispose()
    figures = F.account(sqlite_url, fleet)
    payloads = fleet.payloads()
    day_ahead = time.time() + DAY / 2
    skewed_frames = [
        k for k, p in payloads.items() if k[0] == SKEWED and frames.decode(p)["ts"] > day_ahead
    ]
    flagged = [k for k in skewed_frames if frames.decode(payloads[k])["unsynced"]]
    after = [
        frames.decode(p) for k, p in payloads.items() if k[0] == SKEWED and k not in skewed_frames
    ]
    figures.update(
        terminals=N,
        skew_s=DAY,
        skewed_frames=len(skewed_frames),
        skewed_frames_flagged=len(flagged),
        synchronised_frames=sum(1 for f in after if not f["unsynced"]),
        clock_alarms_raised=[[t, str(s)] for t, s in raised],
        clock_alarms=[[t, str(s)] for t, s in alarms],
        settle_s=round(settle_s, 2),
        **fleet.resend_figures(),
    )
    F.Report("clock_skew", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    # stored exactly as sent, under the terminal's own (skewed) times
    assert figures["wrong_values"] == 0 and figures["extra_values"] == 0, figures
    assert len(skewed_frames) >= 8 and flagged == skewed_frames, figures
    assert figures["synchronised_frames"] >= 3, figures
    assert [t for t, _s in raised] == [SKEWED], figures
    assert alarms == [(SKEWED, AlarmState.CLEARED)], figures
