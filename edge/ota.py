"""Over-the-air update on the terminal: download, verify, stage, switch, confirm.

Imported by the agent only while an update is under way (an ``ota``
command, or ``ota/job.json`` on flash at boot), and dropped when it ends,
so none of it stays on the steady-state heap. docs/ota.md is the contract;
``edge.loader`` (the board's ``main.py``) is the other half.

The agent hands over (``Updater(agent, booted)``): ``agent.dir`` (flash
root), ``agent.hal`` (ticks), ``agent.session`` (publish), ``agent.report``
(``otastat`` into the outbox), ``agent.outbox`` (budget and use),
``agent.boot``, ``agent.reboot_soon()``. ``booted`` is what the loader
passed to ``edge.agent.run``: ``{"slot": ..., "trial": bool}``; None when
the agent was not started by the loader (a virtual terminal), which cannot
be updated this way.

Flow: :meth:`Updater.offer` checks the offer and that it fits before any
byte is asked; :meth:`step` asks for one chunk at a time (``otareq``, QoS
0, asked again after REQUEST_MS), :meth:`chunk` appends it to the file in
the staging slot; first ``manifest.sig`` and ``manifest.json`` (the
signature is checked before any other file is fetched), then every file of
the manifest except ``main.py``, each checked against its SHA-256 when
complete. Then ``ota/job.json`` says ``trial`` and ``ota/boot.json`` names
the slot on trial, and the agent restarts. In the new copy,
:meth:`acked` confirms on the cloud's first ack of the boot;
:meth:`step` rolls back when ``confirm_s`` passes first. :meth:`cancel`
(the ``ota_cancel`` command) stops a download before the switch. Failures are
reported (``otastat`` ``failed``/``rolled_back`` with the reason), never
raised to the agent.
"""

import hashlib
import json
import os
from binascii import hexlify, unhexlify

from edge import loader
from protocol.ota import KEYS, LOADER, MANIFEST, SIG, signed_message

JOB = "ota/job.json"
CHUNK = 2048  # bytes asked per request (protocol MAX_CHUNK is 3072)
REQUEST_MS = 3000  # a request without an answer is asked again after this
MAX_META = 16384  # manifest.json and manifest.sig larger than this are refused
MAX_FILE_TRIES = 3  # a file whose hash keeps failing ends the job
REPORT_STEP = 10  # percent of progress between two downloading reports
BLOCK = 4096  # filesystem block when statvfs cannot say
CANCELLED = "cancelled by the cloud"  # the reason a cancelled download reports


class OtaFailed(Exception):
    """The update cannot go on; the message is the reason reported."""


def file_sha256(path):
    h = hashlib.sha256()
    buf = bytearray(1024)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(buf[:n] if n < len(buf) else buf)
    return hexlify(h.digest()).decode()


def size_of(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def remove_tree(path):
    """Delete ``path`` and everything below it; missing is fine."""
    try:
        names = os.listdir(path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for name in names:
        remove_tree(path + "/" + name)
    try:
        os.rmdir(path)
    except OSError:
        pass


def makedirs(path):
    cur = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if not part:
            continue
        cur = cur + part if cur in ("", "/") else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass


def flash_free(root):
    """``(free bytes, block size)`` of the filesystem, or ``(None, BLOCK)``."""
    try:
        st = os.statvfs(root or "/")
    except (AttributeError, OSError):
        return None, BLOCK
    return st[0] * st[4], st[0] or BLOCK


def tree_blocks(path, block):
    """Bytes ``path`` occupies, every file rounded up to whole blocks."""
    try:
        names = os.listdir(path)
    except OSError:
        n = size_of(path)
        return 0 if n < 0 else (n + block - 1) // block * block
    total = 0
    for name in names:
        total += tree_blocks(path + "/" + name, block)
    return total


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _mpy_format():
    """The board's .mpy format as "6.3", or None where it cannot be known."""
    try:
        import sys

        mpy = sys.implementation._mpy  # type: ignore[attr-defined,unused-ignore]
    except AttributeError:
        return None
    return "%d.%d" % (mpy & 0xFF, (mpy >> 8) & 3)


class Updater:
    """One update job of one agent (see the module doc)."""

    def __init__(self, agent, booted):
        self.agent = agent
        self.booted = booted
        self.root = agent.dir
        self.job = {}  # type: dict  # the job, as in ota/job.json; empty: none
        self.todo = []  # type: list  # (path, size, sha256) still to fetch, in order
        self.total = 0
        self.done = 0
        self.files = []  # type: list  # the verified manifest's files
        self.want = None  # (path, off) asked and not answered
        self.asked_at = 0
        self.reported = -REPORT_STEP
        self.tries = {}
        self.finished = False  # the agent may drop this object
        self.started = agent.hal.ticks_ms()
        self.deadline_ms = None
        job = self._load_job()
        if job is not None:
            self._resume(job)
        else:
            self.finished = True

    # -- paths and state files

    def _p(self, name):
        return self.root + "/" + name if self.root else name

    def _slot_dir(self, slot):
        return self._p("ota/" + slot) if slot else self.root

    def _staged(self, path):
        return self._p("ota/" + self.job["slot"] + "/" + path)

    def _load_job(self):
        try:
            with open(self._p(JOB)) as f:
                job = json.loads(f.read())
        except (OSError, ValueError):
            return None
        return job if isinstance(job, dict) and "job" in job else None

    def _save_job(self):
        path = self._p(JOB)
        makedirs(self._p("ota"))
        with open(path + ".tmp", "w") as f:
            f.write(json.dumps(self.job))
        try:
            os.rename(path + ".tmp", path)
        except OSError:
            os.remove(path)
            os.rename(path + ".tmp", path)

    def _end(self):
        """The job is over: forget it on flash; the agent drops this object."""
        for name in (JOB, JOB + ".tmp"):
            try:
                os.remove(self._p(name))
            except OSError:
                pass
        self.job = {}
        self.want = None
        self.finished = True

    # -- reports

    def _report(self, state, reason=None, job=None):
        j = job if job is not None else self.job
        self.agent.queue_frame(
            "otastat",
            job=j["job"] if j else 0,
            state=state,
            done=self.done if self.done > 0 else 0,
            total=self.total,
            reason=reason[:255] if reason else None,
        )

    def _fail(self, reason, state="failed"):
        self.agent.log("ota: job %s %s: %s" % (self.job.get("job"), state, reason))
        self._report(state, reason)
        if self.job and self.job.get("state") == "download":
            remove_tree(self._p("ota/" + self.job["slot"]))
        self._end()

    # -- offer

    def offer(self, args):
        """An ``ota`` command: ``(ok, result)`` for its ``cmdres``.

        Refused (nothing is downloaded) when the terminal was not started by
        the boot loader, the args are malformed, or the bundle cannot fit.
        An offer of the job already under way is accepted again (the
        cloud's offer crossed a reboot); any other job replaces it.
        """
        try:
            job = self._check_offer(args)
        except OtaFailed as err:
            reason = str(err)
            jid = args.get("job") if isinstance(args.get("job"), int) else 0
            self._report("failed", reason, {"job": jid})
            self.finished = not self.job
            return False, reason
        if self.job and self.job["job"] == job["job"]:
            return True, {"resumed": self.done}
        if self.job and self.job.get("state") != "download":
            return False, "busy: job %d is being confirmed" % self.job["job"]
        if self.job:
            remove_tree(self._p("ota/" + self.job["slot"]))
        remove_tree(self._p("ota/" + job["slot"]))
        self.job = job
        self.finished = False
        self._save_job()
        self._resume(job)
        return True, {"slot": job["slot"]}

    def cancel(self, args):
        """An ``ota_cancel`` command (the operator cancelled the rollout, or the
        cloud withdrew a job it no longer serves): ``(ok, result)`` for its
        ``cmdres``.

        A download of that job stops: its staging slot is removed and the job
        is reported ``failed`` (``cancelled by the cloud``); the running copy
        never changed. Once switched (on trial) it is too late: the new copy
        confirms or rolls back by itself, so the cancel is refused. A job that
        is not under way needs nothing: ok.
        """
        jid = args.get("job")
        if not isinstance(jid, int) or jid <= 0:
            return False, "bad args: job is required"
        if not self.job or self.job["job"] != jid:
            return True, "job %d is not under way" % jid
        if self.job.get("state") != "download":
            return False, "too late: job %d is installed; it confirms or rolls back" % jid
        self._fail(CANCELLED)
        return True, "job %d cancelled" % jid

    def _check_offer(self, args):
        if self.booted is None:
            raise OtaFailed("this terminal was not started by the boot loader (main.py)")
        jid = args.get("job")
        size = args.get("size")
        nfiles = args.get("files", 64)
        bundle = args.get("bundle")
        if not (
            isinstance(jid, int)
            and jid > 0
            and isinstance(size, int)
            and size > 0
            and isinstance(nfiles, int)
            and isinstance(bundle, str)
            and len(bundle) == 64
        ):
            raise OtaFailed("bad offer: job, bundle, size and files are required")
        running = self.booted["slot"]
        slot = "b" if running == "a" else "a"
        free, block = flash_free(self.root)
        if free is not None:
            free += tree_blocks(self._p("ota/" + slot), block)
            if self.job and self.job["slot"] != slot:
                free += tree_blocks(self._p("ota/" + self.job["slot"]), block)
            ob = self.agent.outbox
            reserve = ob.budget - ob.used if ob.budget > ob.used else 0
            need = size + (nfiles + 4) * block + reserve
            if need > free:
                raise OtaFailed(
                    "does not fit: needs %d KB with the outbox's reserve, %d KB free"
                    % (need // 1024, free // 1024)
                )
        confirm = args.get("confirm_s", 300)
        if not isinstance(confirm, int) or not 10 <= confirm <= 86400:
            confirm = 300
        return {
            "job": jid,
            "bundle": bundle,
            "version": str(args.get("version", ""))[:64],
            "size": size,
            "confirm_s": confirm,
            "slot": slot,
            "from": running,
            "state": "download",
        }

    # -- resume after a boot, or start

    def _resume(self, job):
        self.job = job
        state = job.get("state")
        if self.booted is None:
            self._fail("this terminal was not started by the boot loader (main.py)")
        elif state == "download":
            self._plan()
        elif state == "trial":
            self._after_switch()
        else:
            self._end()

    def _plan(self):
        """What remains to fetch, from what is on flash (the resume point)."""
        self.total = self.job["size"]
        self.todo = []
        self.files = []
        makedirs(self._p("ota/" + self.job["slot"]))
        self.done = 0
        for name in (SIG, MANIFEST):
            n = size_of(self._staged(name))
            self.done += n if n > 0 else 0
        if self._meta_complete():
            try:
                self._accept_manifest()
            except OtaFailed as err:
                self._fail(str(err))
                return
        else:
            self.done = 0
        if not self.files:
            self.todo = [(SIG, None, None), (MANIFEST, None, None)]
        self.reported = (self.done * 100 // self.total) // REPORT_STEP * REPORT_STEP
        self._report("downloading")

    def _meta_complete(self):
        return self.job.get("meta") == [size_of(self._staged(SIG)), size_of(self._staged(MANIFEST))]

    # -- the signed manifest

    def _accept_manifest(self):
        """Check the signature and the manifest; plan the files. OtaFailed if bad."""
        try:
            sig = json.loads(_read(self._staged(SIG)))
            key = sig["key"]
            signature = unhexlify(sig["sig"])
            body = _read(self._staged(MANIFEST))
        except (OSError, ValueError, KeyError, TypeError):
            raise OtaFailed("manifest.sig is malformed") from None
        trusted = self._trusted_keys()
        if key not in trusted:
            raise OtaFailed("signed by an untrusted key %s..." % str(key)[:16])
        self.agent.wdt.feed()  # a verification takes seconds on an ESP32
        from edge import ed25519

        ok = ed25519.verify(
            unhexlify(key), signed_message(hashlib.sha256(body).digest()), signature
        )
        if not ok:
            raise OtaFailed("bad signature")
        try:
            manifest = json.loads(body)
            files = manifest["files"]
        except (ValueError, KeyError, TypeError):
            raise OtaFailed("manifest.json is malformed") from None
        del body
        if manifest.get("bundle_id") != self.job["bundle"]:
            raise OtaFailed("the manifest is of another bundle than the one offered")
        mine = _mpy_format()
        if mine is not None and manifest.get("mpy_version") != mine:
            raise OtaFailed(
                "bundle is for .mpy %s, board loads %s" % (manifest.get("mpy_version"), mine)
            )
        todo = []
        for path in sorted(files):
            entry = files[path]
            parts = path.split("/")
            if path.startswith("/") or ".." in parts or "" in parts or path == MANIFEST:
                raise OtaFailed("manifest lists a bad path %r" % path)
            if path == LOADER:
                continue  # the boot loader is never replaced over the air
            todo.append((path, entry["size"], entry["sha256"]))
        self.files = todo
        self.total = size_of(self._staged(SIG)) + size_of(self._staged(MANIFEST))
        self.done = self.total
        for path, size, _sha in todo:
            self.total += size
            n = size_of(self._staged(path))
            if 0 <= n <= size:
                self.done += n
            elif n > size:
                os.remove(self._staged(path))
        self.todo = todo

    def _trusted_keys(self):
        path = self._slot_dir(self.booted["slot"])
        path = path + "/" + KEYS if path else KEYS
        try:
            with open(path) as f:
                keys = json.loads(f.read())
        except (OSError, ValueError):
            return ()
        return keys.get("keys", ()) if isinstance(keys, dict) else ()

    # -- download

    def busy(self):
        """True while chunks are being fetched: the agent then naps only briefly."""
        return bool(self.todo) and self.job and self.job.get("state") == "download"

    def step(self):
        """Ask for the next chunk, ask again after a silence, watch the deadline."""
        if self.finished or not self.job:
            return
        hal = self.agent.hal
        now = hal.ticks_ms()
        if self.deadline_ms is not None:
            if hal.ticks_diff(now, self.started) >= self.deadline_ms:
                self._deadline_passed()
            return
        if not self.todo:
            return
        if self.want is not None and hal.ticks_diff(now, self.asked_at) < REQUEST_MS:
            return
        path, size, _sha = self.todo[0]
        off = size_of(self._staged(path))
        if off < 0:
            off = 0
            if "/" in path:
                makedirs(self._staged(path.rpartition("/")[0]))
        limit = MAX_META if size is None else size
        n = limit - off if limit - off < CHUNK else CHUNK
        if n <= 0:
            try:
                self._file_done()
            except OtaFailed as err:
                self._fail(str(err))
            return
        if self.agent.send_frame("otareq", job=self.job["job"], path=path, off=off, len=n):
            self.want = (path, off)
            self.asked_at = now

    def chunk(self, frame):
        """A ``chunk`` frame from the cloud: append it if it is the one asked."""
        if not self.job or self.want is None or frame["job"] != self.job["job"]:
            return
        path, off = self.want
        if frame["path"] != path or frame["off"] != off:
            return  # an answer to an older request
        size = self.todo[0][1]
        data = frame["data"]
        try:
            if size is None:
                if frame["size"] > MAX_META:
                    raise OtaFailed("%s is larger than %d bytes" % (path, MAX_META))
                size = frame["size"]
            elif frame["size"] != size:
                raise OtaFailed("%s: size differs from the signed manifest" % path)
            if (not data and off < size) or off + len(data) > size:
                raise OtaFailed("%s: bad chunk at %d" % (path, off))
            with open(self._staged(path), "ab") as f:
                f.write(data)
            self.want = None
            self.done += len(data)
            if off + len(data) >= size:
                if self.todo[0][1] is None:
                    self.todo[0] = (path, size, None)
                self._file_done()
            self._progress()
            self.step()  # the next request at once: one round trip per chunk
        except OtaFailed as err:
            self._fail(str(err))
        except OSError as err:
            self._fail("flash write failed: %r" % (err,))

    def _file_done(self):
        path, size, sha = self.todo[0]
        staged = self._staged(path)
        if sha is not None and file_sha256(staged) != sha:
            n = self.tries.get(path, 0) + 1
            self.tries[path] = n
            os.remove(staged)
            self.done -= size
            if n >= MAX_FILE_TRIES:
                raise OtaFailed("%s: sha256 mismatch" % path)
            return  # fetched again from the start
        self.todo.pop(0)
        if path == MANIFEST:
            self.job["meta"] = [size_of(self._staged(SIG)), size_of(staged)]
            self._accept_manifest()
            self._save_job()
        elif not self.todo:
            self._install()

    def _progress(self):
        if not self.total:
            return
        pct = self.done * 100 // self.total
        if pct >= self.reported + REPORT_STEP and self.todo:
            self.reported = pct // REPORT_STEP * REPORT_STEP
            self._report("downloading")

    # -- switch

    def _install(self):
        """Every file is staged: check them all once more, then switch and restart."""
        self._report("verifying")
        for path, _size, sha in self.files:
            if file_sha256(self._staged(path)) != sha:
                raise OtaFailed("%s: sha256 mismatch after staging" % path)
        self.job["state"] = "trial"
        self._save_job()
        self._switch()

    def _switch(self):
        st = loader.read_state(self.root)
        st["slot"] = self.booted["slot"]
        st["try"] = self.job["slot"]
        st["tries"] = 0
        st["failed"] = None
        loader.write_state(st, self.root)
        self._report("installed")
        self.agent.log(
            "ota: job %d installed in slot %s, restarting" % (self.job["job"], self.job["slot"])
        )
        self.agent.reboot_soon()
        self.finished = False

    # -- after the switch: confirm, or find out that the loader rolled back

    def _after_switch(self):
        job = self.job
        self.total = self.done = job["size"]
        booted = self.booted
        if booted["trial"] and booted["slot"] == job["slot"]:
            self.deadline_ms = job["confirm_s"] * 1000
            return  # on trial: wait for the cloud's ack (acked) or the deadline (step)
        st = loader.read_state(self.root)
        if booted["slot"] == job["slot"]:
            self._report("confirmed")  # confirmed, cut before the job was closed
            self._end()
        elif st.get("failed"):
            reason = st["failed"]
            st["failed"] = None
            loader.write_state(st, self.root)
            remove_tree(self._p("ota/" + job["slot"]))
            self._fail(reason, "rolled_back")
        else:  # cut between job.json and boot.json: switch again
            try:
                self._install()
            except OtaFailed as err:
                self._fail(str(err))

    def acked(self, boot):
        """The cloud acknowledged frames of ``boot``: on trial, that confirms."""
        if self.deadline_ms is None or not self.job or boot != self.agent.boot:
            return
        st = loader.read_state(self.root)
        st["slot"] = self.job["slot"]
        st["try"] = None
        st["tries"] = 0
        st["failed"] = None
        loader.write_state(st, self.root)
        self.deadline_ms = None
        self.agent.log("ota: job %d confirmed, slot %s" % (self.job["job"], self.job["slot"]))
        self._report("confirmed")
        self._end()

    def _deadline_passed(self):
        why = self.agent.session.last_error
        reason = "not confirmed within %d s (%s)" % (
            self.job["confirm_s"],
            "no connection: %r" % (why,) if why is not None else "no ack",
        )
        loader.fail(reason, self.root)
        self.deadline_ms = None
        self.agent.log("ota: " + reason + "; rolling back")
        self.agent.reboot_now()
