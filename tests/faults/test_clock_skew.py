"""A terminal whose clock is a day ahead, then synchronised again.

One terminal of the fleet runs 24 h ahead and says so (its frames carry the
``unsynced`` flag, as the agent sets it until clock sync succeeds); then its
clock is corrected and the flag drops. Expected: every sample stored under
the terminal's own timestamps (the skewed ones too), nobody's values
overwritten, the ``clock`` alarm raised for that terminal only, and cleared
once its next heartbeat says synchronised.
"""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from cloud.models import Alarm
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker

N = F.profile(20, 100)
DAY = 86400
SKEWED = "F000"


def test_day_of_clock_skew_is_flagged_and_overwrites_nothing(
    broker: MosquittoBroker, sqlite_url: str, tmp_path: Path
) -> None:
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    now = int(time.time()) // 60 * 60  # live data (older than 300 s counts as historical)
    fleet = F.Fleet(broker.ports["terminal"], N, period=0.1, start=now, skew={SKEWED: DAY})
    eng = F.engine(sqlite_url)
    skewed = fleet.terms[0]
    try:
        fleet.wait_connected()
        fleet.start()
        S.wait_for(lambda: F.receipt_count(eng) >= N * 10, 60, "the skewed stream")
        fleet.stop_generating()
        skewed_until = skewed.term.clock
        fleet.unsynced.clear()  # clock sync succeeded: back by a day, flag off
        skewed.term.clock -= DAY
        # the heartbeat after a sync is what clears the alarm (plain data
        # frames with a good clock carry nothing for the alarm engine)
        skewed.send(skewed.term.status())
        fleet.start()
        S.wait_for(lambda: F.receipt_count(eng) >= N * 20, 60, "the synchronised stream")
        fleet.stop_generating()
        fleet.drain()
        total = len(fleet.generated())
        S.wait_for(lambda: F.receipt_count(eng) >= total, 60, f"all {total} frames")
        worker.stop()
        with eng.connect() as conn:
            alarms = [
                tuple(r)
                for r in conn.execute(
                    sa.select(Alarm.terminal_id, Alarm.state).where(Alarm.cond == "clock")
                )
            ]
    finally:
        fleet.close()
        eng.dispose()
    figures = F.account(sqlite_url, fleet)
    skewed_samples = sum(1 for (_n, ts) in skewed.term.sent if ts >= now + DAY)
    figures.update(
        terminals=N,
        skew_s=DAY,
        skewed_samples=skewed_samples,
        skewed_until=skewed_until,
        clock_alarms=[list(a) for a in alarms],
    )
    F.Report("clock_skew", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    # stored exactly as sent, under the terminal's own (skewed) times
    assert figures["wrong_values"] == 0 and figures["extra_values"] == 0, figures
    assert skewed_samples > 0, figures
    assert [a[0] for a in alarms] == [SKEWED], figures
    assert str(alarms[0][1]).endswith("cleared"), figures
