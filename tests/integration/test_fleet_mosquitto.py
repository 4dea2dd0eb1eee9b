"""A fleet of 50 virtual terminals against the project's Mosquitto, run by the real command.

``python -m firmware_sim fleet`` runs for about 20 s in two worker processes;
a cloud-side service account counts what arrives and decodes every frame the
way the cloud does (``cloud.codec.decode_frame``). The scenario forces
leakage on two terminals and cuts another group's connections.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from cloud.broker import account_from_row
from firmware_sim.scenario import load
from tests.support.broker import MosquittoBroker
from tests.support.virtual_terminal import REPO, Uplink

N = 50
LEAKY = (7, 31)
CUT = (10, 11, 12)
OUTAGE = 20
SCENARIO = """
name = "it"
prefix = "FT"
terminals = 50
seed = 5

[site]
sample = {interval = 2}

[cloud]
upload = 0
heartbeat = 600
thresholds = [{channel = "leak.ior", cond = "leak", warn = 30, alarm = 50, hyst = 2}]

[[device]]
kind = "insulation"
unit = 1
name = "leak"

[[device]]
kind = "meter"
unit = 2
name = "power"

[groups]
leaky = [7, 31]
flaky = [10, 11, 12]
offline = [20]

[[event]]
at = 6
action = "set"
group = "leaky"
unit = 1
point = "ior"
value = 62.0

[[event]]
at = 8
action = "cut"
group = "flaky"

[[event]]
at = 7
action = "outage"
group = "offline"
down = 6
"""


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("fleet")
    scenario_path = work / "it.toml"
    scenario_path.write_text(SCENARIO)
    sc = load(scenario_path)
    rows = [(sc.tid(n), "secret-%d" % n, "terminal") for n in range(1, N + 1)]
    rows.append(("ingest", "ingest-secret", "ingest"))
    accounts_csv = work / "accounts.csv"
    accounts_csv.write_text("".join("%s,%s,%s\n" % row for row in rows))
    accounts = [account_from_row(u, s, r, iterations=101) for u, s, r in rows]
    with MosquittoBroker(work / "mqtt", accounts) as broker:
        sub = broker.client("service", "ingest", "ingest-secret")
        sub.connect_ok()
        sub.subscribe("mm/v1/+/up/#", qos=1)
        uplink = Uplink(sub, acks=True)
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "firmware_sim",
                    "fleet",
                    "--scenario",
                    str(scenario_path),
                    "--broker",
                    "127.0.0.1:%d" % broker.ports["terminal"],
                    "--accounts",
                    str(accounts_csv),
                    "--processes",
                    "2",
                    "--state-dir",
                    str(work / "state"),
                    "--duration",
                    "20",
                    "--ramp",
                    "2",
                    "--progress",
                    "2",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            # Deaths are the broker's last wills, sent as the workers exit.
            uplink.wait_for(
                lambda f: f["type"] == "death" and f["tid"] == sc.tid(N),
                15,
                "the last terminal's death",
            )
            frames = uplink.frames()
        finally:
            sub.close()
    return {"proc": proc, "frames": frames, "sc": sc, "state": work / "state"}


def by_terminal(frames: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in frames:
        if f["type"] == kind:
            out[f["tid"]].append(f)
    return out


def test_the_command_runs_and_reports_progress(fleet_run: dict[str, Any]) -> None:
    proc = fleet_run["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("fleet it: 50 terminals in 2 processes")
    assert any("up 50/50" in line for line in lines), proc.stdout
    assert lines[-1] == "stopped"
    assert "events 3/3" in lines[-2]
    assert (fleet_run["state"] / "fleet-status.json").exists()


def test_every_terminal_is_born_and_sends_data(fleet_run: dict[str, Any]) -> None:
    sc = fleet_run["sc"]
    frames = fleet_run["frames"]
    tids = {sc.tid(n) for n in range(1, N + 1)}
    births = by_terminal(frames, "birth")
    data = by_terminal(frames, "data")
    assert set(births) == tids
    assert set(data) == tids
    # 2 s sampling for ~18 s after the ramp: several samples each, none wildly more.
    counts = {tid: sum(len(f["samples"]) for f in fs) for tid, fs in data.items()}
    assert min(counts.values()) >= 5, counts
    assert max(counts.values()) <= 12, counts
    birth = births[sc.tid(1)][0]
    assert [c["name"] for c in birth["channels"]][:3] == ["leak.io", "leak.ior", "leak.v"]
    assert set(by_terminal(frames, "death")) == tids  # every shutdown fired the will


def test_no_frame_arrives_twice_over_a_link_that_stayed_up(fleet_run: dict[str, Any]) -> None:
    # A terminal whose link went down resends what the cloud had not acked
    # yet (an ack lost with the link included): at least once, and the
    # cloud's receipts drop the copy. Over a steady link nothing repeats.
    sc = fleet_run["sc"]
    lossy = {sc.tid(n) for n in (*CUT, OUTAGE)}
    keys = Counter(
        (f["tid"], f["boot"], f["seq"])
        for f in fleet_run["frames"]
        if f["type"] not in ("birth", "death") and f["tid"] not in lossy
    )
    assert keys and max(keys.values()) == 1


def test_the_alarm_shows_up_on_the_right_terminals_only(fleet_run: dict[str, Any]) -> None:
    sc = fleet_run["sc"]
    alarms = by_terminal(fleet_run["frames"], "alarm")
    assert set(alarms) == {sc.tid(n) for n in LEAKY}
    for tid, fs in alarms.items():
        raised = [f for f in fs if f["state"] == "raised"]
        assert raised, tid
        top = max(f["level"] for f in raised)
        assert top == 2, fs  # 62 mA is above the alarm level, not just the warning
        assert all(f["cond"] == "leak" and f["alias"] == 1 for f in fs)
        assert max(f["value"] for f in raised) == 620  # raw, 0.1 mA


def test_cut_terminals_reconnect(fleet_run: dict[str, Any]) -> None:
    sc = fleet_run["sc"]
    births = by_terminal(fleet_run["frames"], "birth")
    for n in CUT:
        # One birth in the outbox at boot, one per connect: a reconnect adds one more.
        assert len(births[sc.tid(n)]) > len(births[sc.tid(1)]), births[sc.tid(n)]


def test_state_directories_hold_each_terminals_flash(fleet_run: dict[str, Any]) -> None:
    state: Path = fleet_run["state"]
    assert (state / "FT0001" / "boot").read_text().strip() == "1"
    assert (state / "FT0050" / "site.json").exists()
    assert (state / "fleet-0.log").exists() and (state / "fleet-1.log").exists()


def test_an_uplink_outage_delays_frames_but_loses_none(fleet_run: dict[str, Any]) -> None:
    sc = fleet_run["sc"]
    tid = sc.tid(OUTAGE)
    mine = [f for f in fleet_run["frames"] if f["tid"] == tid]
    assert len([f for f in mine if f["type"] == "birth"]) >= 3  # boot, connect, reconnect
    # Every frame of the boot arrived: sequence numbers without a gap (a frame
    # whose ack the outage swallowed may arrive twice; receipts drop the copy).
    seqs = sorted({f["seq"] for f in mine if f["boot"] == 1})
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
    samples = sum(len(f["samples"]) for f in mine if f["type"] == "data")
    assert samples >= 5
