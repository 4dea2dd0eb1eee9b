"""Over-the-air update on the terminal (edge/ota.py, edge/loader.py), end to end
against the scripted broker, which here also plays the cloud's chunk server.

Runs under CPython (pytest) and real MicroPython. The bundle is the signed
fixture tests/mpy/data/ota_bundle.json (made by tests/support/ota_fixture.py:
the terminal cannot sign). A reboot is the FakeHal's Rebooted exception;
after it the boot loader's choice (edge.loader.choose) starts the next
Agent, as main.py does on a board. What the new copy *runs* is not tested
here (the same code stands in for both copies): tests/integration/test_ota_board.py
boots real bundles on the virtual board.
"""

import json
import os
import sys
from binascii import unhexlify

from test_agent_fakes import TID, Rebooted, Rig

from edge import loader
from edge.agent import Agent
from protocol import frames

JOB = 7


def _root():
    parts = __file__.replace("\\", "/").split("/")
    return "/".join(parts[:-3]) or "."


def fixture():
    with open(_root() + "/tests/mpy/data/ota_bundle.json") as f:
        doc = json.loads(f.read())
    files = {}
    for path, hexdata in doc["files"].items():
        files[path] = unhexlify(hexdata)
    files["manifest.json"] = doc["manifest"].encode()
    files["manifest.sig"] = doc["sig"].encode()
    doc["served"] = files
    doc["bundle"] = json.loads(doc["manifest"])["bundle_id"]
    doc["size"] = sum(len(d) for p, d in files.items() if p != "main.py")
    return doc


class Cloud:
    """Answers the terminal's otareq frames from ``files`` (path -> bytes)."""

    def __init__(self, rig, files):
        self.rig = rig
        self.files = dict(files)
        self.seen = 0
        self.requests = []
        self.silent = False

    def answer(self):
        pub = self.rig.broker.published
        while self.seen < len(pub):
            topic, payload = pub[self.seen]
            self.seen += 1
            if not topic.endswith("/up/otareq"):
                continue
            req = frames.decode(payload)
            self.requests.append((req["path"], req["off"]))
            if self.silent:
                continue
            data = self.files[req["path"]]
            part = data[req["off"] : req["off"] + req["len"]]
            self.rig.downlink(
                "chunk",
                {
                    "job": req["job"],
                    "path": req["path"],
                    "off": req["off"],
                    "size": len(data),
                    "data": part,
                },
                retain=False,
            )


def boot(rig, booted):
    rig.agent = Agent(rig.hal, rig.dir, log=rig.log.append, booted=booted)
    return rig.agent


def boot_as_loader(rig):
    slot, trial = loader.choose(rig.dir)
    return boot(rig, {"slot": slot, "trial": trial})


def run(rig, cloud, seconds):
    """Step for ``seconds`` of virtual time; True if the agent rebooted."""
    end = rig.now_ms() + int(seconds * 1000)
    while rig.link.ticks_diff(end, rig.now_ms()) > 0:
        try:
            wait = rig.agent.step()
        except Rebooted:
            return True
        if cloud is not None:
            cloud.answer()
        rig.link.sleep_ms(max(wait, 1))
    return False


def stats(rig):
    return [(f["state"], f["reason"]) for f in rig.broker.frames("otastat")]


def offer(rig, doc, **over):
    args = {
        "job": JOB,
        "bundle": doc["bundle"],
        "version": "9.9.9",
        "size": doc["size"],
        "files": 4,
        "confirm_s": 60,
    }
    args.update(over)
    rig.cmd(11, "ota", args)


def new_rig(name):
    rig = Rig(name)
    doc = fixture()
    with open(rig.dir + "/ota_keys.json", "w") as f:  # the factory copy trusts the key
        f.write(json.dumps({"keys": [doc["public"]]}))
    boot(rig, {"slot": "", "trial": False})
    return rig, doc


def cmdres(rig):
    return [(f["ok"], f["result"]) for f in rig.broker.frames("cmdres")]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_update_downloads_verifies_switches_and_confirms():
    rig, doc = new_rig("ota-e2e")
    cloud = Cloud(rig, doc["served"])
    assert not run(rig, cloud, 2)  # connected
    offer(rig, doc)
    assert run(rig, cloud, 30), "the agent did not restart into the new copy"
    assert cmdres(rig)[0][0] is True
    for path in ("edge/x.mpy", "protocol/y.mpy", "ota_keys.json", "manifest.json"):
        assert read(rig.dir + "/ota/a/" + path) == doc["served"][path]
    assert "main.py" not in os.listdir(rig.dir + "/ota/a")  # the loader is never replaced
    assert [p for p, _o in cloud.requests[:2]] == ["manifest.sig", "manifest.json"]
    states = [s for s, _r in stats(rig)]
    assert states[0] == "downloading" and states[-2:] == ["verifying", "installed"]
    assert loader.read_state(rig.dir)["try"] == "a"
    # the new copy starts on trial and confirms on the cloud's first ack
    boot_as_loader(rig)
    assert rig.agent.booted == {"slot": "a", "trial": True}
    assert rig.agent.ota is not None
    run(rig, cloud, 3)
    st = loader.read_state(rig.dir)
    assert (st["slot"], st["try"]) == ("a", None)
    assert stats(rig)[-1] == ("confirmed", None)
    assert rig.agent.ota is None
    # on a board the update's code leaves the heap (edge.unload); CPython keeps it
    board = sys.implementation.name == "micropython"
    for name in ("edge.ota", "edge.ed25519", "edge.loader", "protocol.ota"):
        assert (name in sys.modules) != board, name
    assert "ota/job.json" not in os.listdir(rig.dir + "/ota")
    # and a restart keeps it
    boot_as_loader(rig)
    assert rig.agent.booted == {"slot": "a", "trial": False} and rig.agent.ota is None


def test_untrusted_key_and_bad_signature_are_refused_before_any_file():
    for name, sig, manifest, reason in (
        ("ota-untrusted", "sig_untrusted", None, "untrusted key"),
        ("ota-badsig", "sig", b" ", "bad signature"),
    ):
        rig, doc = new_rig(name)
        served = dict(doc["served"])
        served["manifest.sig"] = doc[sig].encode()
        if manifest is not None:
            served["manifest.json"] = served["manifest.json"] + manifest
        cloud = Cloud(rig, served)
        run(rig, cloud, 2)
        offer(rig, doc)
        assert not run(rig, cloud, 10)
        assert stats(rig)[-1][0] == "failed" and reason in stats(rig)[-1][1], stats(rig)
        assert {p for p, _o in cloud.requests} <= {"manifest.sig", "manifest.json"}
        assert "a" not in os.listdir(rig.dir + "/ota")  # staging removed
        assert loader.read_state(rig.dir).get("try") is None
        assert rig.agent.ota is None


def test_a_changed_file_is_fetched_again_then_refused():
    rig, doc = new_rig("ota-changed")
    served = dict(doc["served"])
    served["edge/x.mpy"] = b"\xff" + served["edge/x.mpy"][1:]
    cloud = Cloud(rig, served)
    run(rig, cloud, 2)
    offer(rig, doc)
    assert not run(rig, cloud, 20)
    assert stats(rig)[-1] == ("failed", "edge/x.mpy: sha256 mismatch")
    assert cloud.requests.count(("edge/x.mpy", 0)) == 3
    assert loader.read_state(rig.dir).get("try") is None


def test_download_resumes_where_it_stopped_after_a_reboot():
    rig, doc = new_rig("ota-resume")
    cloud = Cloud(rig, doc["served"])
    run(rig, cloud, 2)
    offer(rig, doc)
    # run until the first chunk of edge/x.mpy is on flash, then cut the power
    end = rig.now_ms() + 20000
    staged = rig.dir + "/ota/a/edge/x.mpy"
    while rig.link.ticks_diff(end, rig.now_ms()) > 0:
        rig.agent.step()
        cloud.answer()
        rig.link.sleep_ms(1)
        try:
            if os.stat(staged)[6] >= 2048:
                break
        except OSError:
            pass
    assert os.stat(staged)[6] == 2048
    rig.broker.cut()
    cloud.requests = []
    boot_as_loader(rig)  # power back: the old copy, the job resumes
    assert rig.agent.ota is not None
    assert run(rig, cloud, 30)
    assert cloud.requests[0] == ("edge/x.mpy", 2048)  # not from the start
    assert read(staged) == doc["served"]["edge/x.mpy"]
    assert loader.read_state(rig.dir)["try"] == "a"


def test_a_cancel_stops_the_download_but_not_a_switched_copy():
    rig, doc = new_rig("ota-cancel")
    cloud = Cloud(rig, doc["served"])
    run(rig, cloud, 2)
    offer(rig, doc)
    end = rig.now_ms() + 20000
    staged = rig.dir + "/ota/a/edge/x.mpy"
    while rig.link.ticks_diff(end, rig.now_ms()) > 0:  # until a chunk of edge/x.mpy is staged
        rig.agent.step()
        cloud.answer()
        rig.link.sleep_ms(1)
        try:
            if os.stat(staged)[6] >= 2048:
                break
        except OSError:
            pass
    rig.cmd(12, "ota_cancel", {"job": JOB})
    assert not run(rig, cloud, 1)
    cloud.requests = []
    assert not run(rig, cloud, 10)  # a download would ask again every 3 s
    assert cloud.requests == []
    assert cmdres(rig)[-1] == (True, "job %d cancelled" % JOB)
    assert stats(rig)[-1] == ("failed", "cancelled by the cloud")
    assert sorted(os.listdir(rig.dir + "/ota")) == []  # no slot, no job
    assert rig.agent.ota is None and loader.read_state(rig.dir).get("try") is None
    rig.cmd(13, "ota_cancel", {"job": JOB})  # nothing under way: nothing to do
    run(rig, cloud, 2)
    assert cmdres(rig)[-1] == (True, "job %d is not under way" % JOB)
    rig.cmd(14, "ota_cancel", {})
    run(rig, cloud, 2)
    assert cmdres(rig)[-1] == (False, "bad args: job is required")
    # switched: too late, the new copy confirms (or rolls back) by itself
    offer(rig, doc, job=JOB + 1)
    assert run(rig, cloud, 30)
    boot_as_loader(rig)  # on trial, before its first ack
    ok, why = rig.agent.ota.cancel({"job": JOB + 1})
    assert ok is False and why.startswith("too late"), why
    run(rig, cloud, 3)
    assert stats(rig)[-1] == ("confirmed", None)
    assert loader.read_state(rig.dir)["slot"] == "a"


def test_not_confirmed_in_time_rolls_back_and_says_why():
    rig, doc = new_rig("ota-deadline")
    cloud = Cloud(rig, doc["served"])
    run(rig, cloud, 2)
    offer(rig, doc, confirm_s=20)
    assert run(rig, cloud, 30)
    rig.broker.reachable = False  # the new copy never reaches the cloud
    boot_as_loader(rig)
    assert not run(rig, cloud, 15)
    assert run(rig, cloud, 10), "no rollback at the deadline"
    st = loader.read_state(rig.dir)
    assert st["try"] is None and "not confirmed within 20 s" in st["failed"]
    rig.broker.reachable = True
    boot_as_loader(rig)  # the previous copy again
    assert rig.agent.booted == {"slot": "", "trial": False}
    run(rig, cloud, 3)
    state, reason = stats(rig)[-1]
    assert state == "rolled_back" and "not confirmed within 20 s (no connection" in reason
    assert loader.read_state(rig.dir)["failed"] is None
    assert "a" not in os.listdir(rig.dir + "/ota") and rig.agent.ota is None


def test_loader_gives_up_after_a_reset_loop_and_on_a_crash():
    rig, _doc = new_rig("ota-loader")
    loader.write_state({"slot": "", "try": "b", "tries": 0, "failed": None}, rig.dir)
    for _ in range(loader.MAX_TRIES):
        assert loader.choose(rig.dir) == ("b", True)
    assert loader.choose(rig.dir) == ("", False)
    assert "reset loop" in loader.read_state(rig.dir)["failed"]
    loader.write_state({"slot": "a", "try": "b", "tries": 1, "failed": None}, rig.dir)
    loader.fail("crashed at start: ImportError('x')", rig.dir)
    assert loader.choose(rig.dir) == ("a", False)
    # a power cut between remove and rename (FAT) leaves only the .tmp: it is read
    os.rename(rig.dir + "/ota/boot.json", rig.dir + "/ota/boot.json.tmp")
    assert loader.read_state(rig.dir)["slot"] == "a"


def test_offers_that_cannot_run_are_refused_before_any_byte():
    rig, doc = new_rig("ota-refuse")
    cloud = Cloud(rig, doc["served"])
    run(rig, cloud, 2)
    offer(rig, doc, size=1 << 50)
    run(rig, cloud, 2)
    ok, why = cmdres(rig)[-1]
    assert ok is False and why.startswith("does not fit"), why
    assert cloud.requests == [] and stats(rig)[-1][0] == "failed"
    host = Rig("ota-host")  # started without the boot loader (a virtual terminal)
    host.boot()
    Cloud(host, doc["served"])
    host.run(2)
    host.cmd(12, "ota", {"job": 8, "bundle": doc["bundle"], "size": 10, "files": 1})
    host.run(2)
    res = host.broker.frames("cmdres")[-1]
    assert res["ok"] is False and "boot loader" in res["result"]
    assert host.broker.frames("otastat")[-1]["job"] == 8
    assert TID in host.broker.published[0][0]
