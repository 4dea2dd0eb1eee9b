# mimamori boot loader: main.py on a terminal's flash, written by the installer
# (mimamori-install build copies edge/loader.py), never replaced over the air.
"""Choose the copy of the firmware to start, count trial boots, roll back.

``ota/boot.json`` (written by the updater, ``edge.ota``, and here)::

    {"slot": "a", "try": "b", "tries": 1, "failed": null}

``slot``: the confirmed copy ("" is the one the installer flashed at the
root, "a"/"b" are ``ota/a``, ``ota/b``). ``try``: a staged copy on trial,
started instead of ``slot`` until it confirms (the updater then makes it
``slot``) or fails: after MAX_TRIES starts without confirmation (a
watchdog reset loop), or when importing or starting the agent raises, this
loader clears ``try`` and records why in ``failed``, so the confirmed copy
starts again and reports it. Every write goes to a ``.tmp`` file renamed
over the old one, so a power cut leaves the old or the new state.
"""

import json
import os
import sys

STATE = "ota/boot.json"
MAX_TRIES = 3
AGENT = "edge.agent"


def _path(root, name):
    return root + "/" + name if root else name


def read_state(root=""):
    """The loader state, ``{}`` when there is none or it is unreadable."""
    path = _path(root, STATE)
    for name in (path, path + ".tmp"):  # .tmp alone: cut between remove and rename
        try:
            with open(name) as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(st, dict):
            return st
    return {}


def write_state(st, root=""):
    path = _path(root, STATE)
    tmp = path + ".tmp"
    try:
        os.mkdir(_path(root, "ota"))
    except OSError:
        pass
    with open(tmp, "w") as f:
        f.write(json.dumps(st))
    try:
        os.rename(tmp, path)
    except OSError:  # FAT cannot rename over a file
        os.remove(path)
        os.rename(tmp, path)


def choose(root=""):
    """``(slot, trial)``: the copy to start now, and whether it is on trial.

    Counts the start of a copy on trial, and gives up on it after MAX_TRIES.
    """
    st = read_state(root)
    slot = st.get("slot") or ""
    trial = st.get("try")
    if not trial:
        return slot, False
    tries = st.get("tries", 0) + 1
    if tries > MAX_TRIES:
        fail("reset loop: %d boots without confirmation" % MAX_TRIES, root)
        return slot, False
    st["tries"] = tries
    write_state(st, root)
    return trial, True


def fail(reason, root=""):
    """Give up the copy on trial: the confirmed one starts next time."""
    st = read_state(root)
    if st.get("try"):
        st["try"] = None
        st["failed"] = reason[:200]
        write_state(st, root)


def start():
    """Board entry: start the agent from the chosen copy; roll back if it cannot start."""
    slot, trial = choose()
    if slot:
        sys.path.insert(0, "/ota/" + slot)
    try:
        # Imported by name after sys.path is set: the agent of the chosen copy.
        agent = __import__(AGENT, None, None, ("run",))
        agent.run("", {"slot": slot, "trial": trial})
        problem = "the agent stopped"
    except Exception as err:  # KeyboardInterrupt is not caught: Ctrl-C still reaches the REPL
        if not trial:
            raise
        problem = "crashed at start: %r" % (err,)
    if trial:
        print("mimamori: copy %s on trial failed: %s; rolling back" % (slot, problem))
        fail(problem)
        import machine

        machine.reset()


if __name__ == "__main__":
    start()
