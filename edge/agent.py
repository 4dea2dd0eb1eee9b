"""The terminal agent: sensors -> local alarms -> flash outbox -> MQTT, and back.

Pure logic over a HAL object; the same code runs on a board
(``edge.board.hal``), as a virtual terminal on a PC (``edge.host``) and in
tests (a scripted broker and ``edge.fakelink.FakeLink`` sensors). Nothing here
touches hardware or the network directly, and nothing happens at import.

The HAL (one object; the board and host HALs document their side)::

    ticks_ms() ticks_diff(a, b) sleep_ms(ms)  the ms clock (wrapping ticks)
    rtc() rtc_epoch set_rtc(unix)             real-time clock: seconds since
                                              rtc_epoch (2000 or 1970); set
                                              after each accepted sync
    open_link(bus)                            edge.link.Link for the RS-485
                                              bus, from the site's "bus" part
    mqtt_client(client_id, broker, credentials, keepalive)
                                              a client as edge.session wants;
                                              broker/credentials: the site parts
    network_up()                              True when the uplink can work
    ntp_time(server)                          Unix seconds; OSError if no answer
    watchdog(timeout_ms)                      object with feed()
    mem_free() rssi() random(n)               free heap, link quality or
                                              None, int 0..n-1
    reset()                                   reboot (never returns on a board)

``Agent(hal, state_dir)`` reads ``site.json``/``cloud.json`` from
``state_dir`` (``edge.config.ConfigStore``), increments and persists the
boot counter (``boot``), opens the flash outbox (``outbox/``) and queues
this boot's birth frame first; that set-up, a config frame and a command
run in ``edge.control``, which is imported for them and unloaded after
(docs/agent.md, "Memory"). Then :meth:`Agent.step` does one bounded
slice of work and returns how long the caller may sleep:

1. sample the channels that are due (per-channel intervals from the cloud
   config, default the site's ``sample.interval``), one Modbus poll per due
   device; feed good values to the alarm evaluator, count bad ones;
2. add the sample to the data batch; an alarm event flushes the batch and
   queues the alarm frame at once, so it leaves in this same step;
3. flush the batch when ``upload`` seconds of samples are in it (0: every
   sample), queue a status frame every ``heartbeat`` seconds;
4. NTP when due; 5. connect (with backoff) or poll the session, handle
   downlink (config, commands, acks); 6. publish up to ``DRAIN`` queued
   frames, as many as the in-flight window has room for.

Every frame goes through the outbox except the death (the last will) and
the birth published right after each connect. A queued frame leaves the
flash only when the cloud's ``ack`` names it, not on the broker's PUBACK
(``edge.inflight``; window, resends and timeouts: docs/agent.md). Bad
input is counted, never fatal: Modbus failures (the bus counters),
non-finite sensor values (``bad_value``), malformed downlink
(``bad_downlink``), invalid config (``bad_config``), unknown commands
(``unknown_cmd``), anything unexpected (``internal``); the counts go out in
the status frame's ``errors`` map.
See ``docs/agent.md``.
"""

from edge import unload
from edge.errors import ConfigError
from edge.session import DROPPED, FAILED
from protocol import batch, frames, topics
from protocol.errors import ProtocolError
from protocol.limits import MAX_COUNTERS, MAX_SAMPLES, U32_MAX

TYPE_CHECKING = False  # the names below are for mypy; a terminal never imports them here
if TYPE_CHECKING:
    from typing import Any

    from edge.alarms import Evaluator
    from edge.bus import Bus, Poller
    from edge.clock import Clock, Monotonic
    from edge.inflight import Inflight
    from edge.ota import Updater
    from edge.outbox import Outbox
    from edge.session import Session

DRAIN = 8  # frames published per step at most
IDLE_MS = 100  # longest sleep: how late a sample or a command may be handled
NTP_RETRY = 300  # seconds between NTP attempts while it fails
REBOOT_GRACE = 10  # seconds a reboot waits for the queue to drain
MAX_INTERNAL = 50  # internal errors, each within a minute of the last, that reboot
# Configuration code (the store, the schemas, the sensor profiles) runs at
# boot and for a config frame only; between those its ~17 KB of code leave
# the heap (edge.unload).
_CONFIG_MODULES = ("edge.config", "protocol.config", "edge.profiles")
_FAR = 0x3FFFFFFF  # "never" in mono seconds, still a small int on 32-bit ports

_UNREACHABLE = frames.UNREACHABLE
_OUT_OF_RANGE = frames.OUT_OF_RANGE


def _quiet(msg):
    pass


class Agent:
    """One terminal. Construction raises ConfigError when the site part is
    missing or invalid (a terminal cannot run without it) and OSError when
    the state directory is unusable; after that nothing the sensors, the
    broker or the cloud send can stop it.

    ``log(text)`` receives one line per notable event (connect, config,
    command, error).
    """

    # Set by edge.control.start (bare annotations: no code on MicroPython).
    hal: "Any"
    booted: "dict | None"
    ota: "Updater | None"
    log: "Any"
    dir: str
    errors: dict
    config: dict
    site: dict
    tid: str
    boot: int
    seq: int
    fw: str
    mono: "Monotonic"
    clock: "Clock"
    ntp: "str | None"
    wdt: "Any"
    cfg_version: int
    link: "Any"
    bus: "Bus"
    poller: "Poller | None"  # None while nothing is wired
    dev_base: list
    channels: list
    devices: list
    interval: list
    ch_next: list
    dev_next: list
    _vals: list
    _qual: list
    evaluator: "Evaluator"
    outbox: "Outbox"
    _dropped0: int
    inflight: "Inflight"
    session: "Session"
    heartbeat: int
    upload: int
    next_status: int
    next_ntp: int
    _reboot_at: "int | None"
    _internal: int
    _internal_at: int

    def __init__(self, hal, state_dir="", log=None, booted=None):
        from edge import control  # unloaded below with the configuration code

        try:
            control.start(self, hal, state_dir, log or _quiet, booted)
        finally:
            unload("edge.control", *_CONFIG_MODULES)

    # -- set-up ------------------------------------------------------------------

    def _path(self, name):
        return self.dir + "/" + name if self.dir else name

    def _client(self, keepalive):
        return self.hal.mqtt_client(
            self.tid, self.site["broker"], self.site["credentials"], keepalive
        )

    # -- main loop -------------------------------------------------------------------

    def step(self):
        """Do one bounded slice of work; return the ms the caller may sleep."""
        self.wdt.feed()
        try:
            wait = self._step()
        except Exception as err:  # the last line of defence: count, report, carry on
            self._count("internal")
            now = self.mono()
            # Faults less than a minute apart are one run of trouble.
            self._internal = self._internal + 1 if now - self._internal_at <= 60 else 1
            self._internal_at = now
            self.log("internal error: %r" % (err,))
            unload("protocol.messages")  # a ProtocolError's text: see _downlink
            wait = IDLE_MS
            if self._internal >= MAX_INTERNAL and self._reboot_at is None:
                # Stuck on a fault: a reboot is the board's best remedy.
                self._reboot_at = now
        if self._reboot_at is not None and (
            self.outbox.depth == 0 or self.mono() >= self._reboot_at
        ):
            self.shutdown()
            self.hal.reset()
        return wait

    def run_forever(self):
        """Step and sleep until the board resets (on a host: until ``hal.reset`` raises)."""
        while True:
            wait = self.step()
            if wait > 0:
                self.hal.sleep_ms(wait)

    def shutdown(self):
        """Keep what is in RAM (the open batch goes to flash) and drop the link.

        No DISCONNECT: to the broker this looks like a power cut, so the
        death frame tells the cloud at once.
        """
        try:
            self._flush()
        finally:
            self.session.close(clean=False)
            close = getattr(self.link, "close", None)
            if close is not None:
                close()

    def _step(self):
        now = self.mono()
        self._sample(now, False)
        if self._bcount and now - self._bt0 >= self.upload:
            self._flush()
        if now >= self.next_status:
            self.next_status = now + self.heartbeat
            self._enqueue("status", self._status(now))
        if self.ntp and now >= self.next_ntp and self.hal.network_up():
            self._ntp(now)
        session = self.session
        if not session.up:
            if session.wait_ms() == 0 and self.hal.network_up():
                self._connect()
        if session.up:
            session.poll()
            msg = session.take()
            while msg is not None:
                self._downlink(msg[0], msg[1])
                msg = session.take()
            self._drain(now)
        ota = self.ota
        if ota is not None:
            ota.step()
            if ota.finished:
                self._ota_done()
            elif session.up and ota.busy():
                return 5  # a chunk is on its way
        fl = self.inflight
        if session.up and self.outbox.depth > len(fl) and fl.room() > 0:
            return 0  # more to send and room for it
        # Short naps keep samples on their second and commands prompt.
        wait = IDLE_MS if session.up else session.wait_ms()
        return wait if wait < IDLE_MS else IDLE_MS

    # -- sampling --------------------------------------------------------------------

    def _sample(self, now, force):
        """Poll due devices, record due channels, evaluate alarms. Returns channels read."""
        poller = self.poller
        if poller is None:  # nothing wired
            return 0
        vals = self._vals
        qual = self._qual
        got = 0
        events = None
        for d in range(len(self.dev_next)):
            if not force and now < self.dev_next[d]:
                continue
            if not got:
                for a in range(len(vals)):
                    vals[a] = None
                del qual[:]
            results = poller.poll_device(d)
            base = self.dev_base[d]
            nxt = _FAR
            for k in range(len(results)):
                a = base + k
                due = self.ch_next[a]
                if force or now >= due:
                    due += self.interval[a]
                    if due <= now:  # fell behind (a slow bus): skip, don't burst
                        due = now + self.interval[a]
                    self.ch_next[a] = due
                    got += 1
                    ev = self._value(a, results[k], now)
                    if ev:
                        if events is None:
                            events = []
                        for e in ev:
                            events.append(e)
                nxt = min(nxt, self.ch_next[a])
            self.dev_next[d] = nxt
        if got:
            self._add_sample(now)
            if events:
                # The sample that caused the alarm reaches the cloud first.
                self._flush()
                self._alarms(events)
        return got

    def _value(self, a, v, now):
        """Record channel ``a``'s reading in the sample; return alarm events."""
        if v is None:
            self._qual.append(a)
            self._qual.append(_UNREACHABLE)
            return self.evaluator.failed(a, now)
        if isinstance(v, float) and v - v != 0.0:  # NaN or infinity from a float register
            self._count("bad_value")
            self._qual.append(a)
            self._qual.append(_OUT_OF_RANGE)
            return ()
        self._vals[a] = v
        return self.evaluator.sample(a, v, now)

    # -- data batch ------------------------------------------------------------------
    # Samples are encoded as they come (protocol.batch) rather than kept as
    # lists; the frame head is written at flush time.

    def _batch_reset(self):
        self._body = bytearray()
        self._bcount = 0
        self._bt0 = 0  # mono second of the first sample
        self._blast = 0  # mono second of the latest sample
        self._bts = 0
        self._bflags = 0

    def _add_sample(self, now):
        vals = self._vals
        n = len(vals)
        while n and vals[n - 1] is None:
            n -= 1
        if self._bcount and (now <= self._blast or self._bcount >= MAX_SAMPLES):
            self._flush()  # dt must be >= 1 within a frame; at most 240 samples
        dt = now - self._blast if self._bcount else 0
        enc = batch.sample(dt, vals[:n], self._qual)
        if self._bcount and len(self._body) + len(enc) > batch.BODY_LIMIT:
            self._flush()
            enc = batch.sample(0, vals[:n], self._qual)
        if not self._bcount:
            self._bt0 = now
            self._bts = self.clock.now_unix()
            self._bflags = 1 if self.clock.unsynced else 0
        self._body.extend(enc)
        self._bcount += 1
        self._blast = now
        if self.upload == 0 or self._next_due() - self._bt0 >= self.upload:
            self._flush()

    def _next_due(self):
        return min(self.dev_next) if self.dev_next else self._blast + 1

    def _flush(self):
        """Turn the batch into a data frame in the outbox (same bytes frames.encode gives)."""
        count = self._bcount
        if not count:
            return
        data = batch.frame(
            self.tid, self.boot, self._take_seq(), self._bts, self._bflags, count, self._body
        )
        self._batch_reset()
        self._enqueue("data", data)

    # -- frames ----------------------------------------------------------------------

    def _take_seq(self):
        seq = self.seq
        self.seq = seq + 1
        return seq

    def _frame(self, ftype, seq, **fields):
        f = {
            "type": ftype,
            "tid": self.tid,
            "boot": self.boot,
            "seq": seq,
            "ts": self.clock.now_unix(),
            "unsynced": self.clock.unsynced,
        }
        f.update(fields)
        return frames.encode(f)

    def _birth(self, seq):
        # The tables are kept as tuples (edge.control); the frame's rows are
        # made here, for this frame only.
        channels = []  # type: list
        for c in self.channels:
            channels.append(
                {"alias": len(channels), "name": c[0], "unit": c[1], "kind": c[2], "exp": c[3]}
            )
        devices = []
        for d in self.devices:
            devices.append({"name": d[0], "model": d[1], "status": d[2]})
        return self._frame(
            "birth",
            seq,
            fw=self.fw,
            cfg=self.cfg_version,
            channels=channels,
            devices=devices,
        )

    def _status(self, now):
        rssi = self.hal.rssi()
        if not isinstance(rssi, int) or not -255 <= rssi <= 255:
            rssi = None
        heap = self.hal.mem_free()
        heap = heap if 0 <= heap <= U32_MAX else U32_MAX
        dropped = self.outbox.dropped - self._dropped0
        return self._frame(
            "status",
            self._take_seq(),
            uptime=now & U32_MAX,
            queued=self.outbox.depth,
            dropped=dropped if dropped > 0 else 0,
            rssi=rssi,
            heap=heap,
            errors=self.error_counts(),
        )

    def _alarms(self, events):
        for e in events:
            self._enqueue(
                "alarm",
                self._frame(
                    "alarm",
                    self._take_seq(),
                    alias=e[0],
                    cond=e[1],
                    level=e[2],
                    state=e[3],
                    value=e[4],
                    threshold=e[5],
                ),
            )

    def _enqueue(self, kind, payload):
        try:
            self.outbox.put(payload, kind)
        except (OSError, ValueError) as err:  # flash full or broken: count, go on
            self._count("outbox")
            self.log("outbox: %s frame lost: %r" % (kind, err))

    def _count(self, name):
        self.errors[name] = self.errors.get(name, 0) + 1

    def error_counts(self):
        """The status frame's ``errors`` map: every non-zero counter, by name."""
        out = {}
        for name, n in self.errors.items():
            out[name] = n
        b = self.bus
        for name, n in (
            ("modbus_timeout", b.timeouts),
            ("crc", b.crc_errors),
            ("modbus_frame", b.frame_errors),
            ("modbus_exception", b.exceptions),
            ("link", b.link_errors),
        ):
            if n:
                out[name] = n
        s = self.session
        for name, n in (
            ("mqtt_connect", s.connect_errors),
            ("mqtt_drop", s.drops),
            ("mqtt_publish", s.publish_errors),
            ("downlink_overflow", s.overflow),
            ("ack_timeout", self.inflight.timeouts),
        ):
            if n:
                out[name] = n
        for name, n in out.items():
            if n > U32_MAX:
                out[name] = U32_MAX
        while len(out) > MAX_COUNTERS:
            out.popitem()
        return out

    # -- session ---------------------------------------------------------------------

    def _connect(self):
        seq = self.seq
        death = self._frame("death", seq)
        birth = self._birth(seq + 1)
        result = self.session.connect(death, birth)
        if result != FAILED:
            self.seq = seq + 2  # CONNACK armed the will: both numbers are spent
        if result in (DROPPED, FAILED):
            self.log(
                "connect failed (%r), next try in %d ms"
                % (self.session.last_error, self.session.delay_ms)
            )
        else:
            self.log("connected as %s, boot %d, birth seq %d" % (self.tid, self.boot, seq + 1))
            # A new session: whatever the cloud has not acknowledged goes again,
            # oldest first (acks sent to the old session are lost with it).
            self.inflight.go_back()

    def _drain(self, now):
        """Publish queued frames while the in-flight window has room."""
        fl = self.inflight
        if fl.expired(now):
            self.log("no ack for %d s: resending %d frames from the oldest" % (fl.timeout, len(fl)))
            fl.timed_out()
        room = fl.room()
        if room <= 0:
            return
        bad = []
        for rid, kind, payload in self.outbox.peek(DRAIN if DRAIN < room else room, fl.cursor):
            head = None
            try:
                head = frames.head(payload)
            except ProtocolError:
                pass
            if head is None:  # unreadable, so never acknowledged: it would block the window
                bad.append(rid)
                self._count("outbox")
                continue
            if not self.session.publish(kind, payload):
                break
            fl.sent(rid, head[2], head[3], now)
        if bad:
            self.outbox.ack(bad)

    def _on_ack(self, frame):
        done = self.inflight.apply(frame["for_boot"], frame["ranges"])
        if done:
            self.outbox.ack(done)
            if self.ota is not None:
                self.ota.acked(frame["for_boot"])

    # -- downlink --------------------------------------------------------------------

    def _downlink(self, topic, msg):
        try:
            frame = frames.decode(msg)
            topics.check_frame_topic(topic.decode() if isinstance(topic, bytes) else topic, frame)
        except (ProtocolError, UnicodeError) as err:
            self._count("bad_downlink")
            self.log("bad downlink on %r: %s" % (topic, err))
            # Showing a ProtocolError loaded its message table; a terminal
            # keeps it off the heap between errors (protocol.messages).
            unload("protocol.messages")
            return
        now = self.mono()
        if self.clock.syncs == 0 and not self.clock.synced and frame["ts"] > self.clock.now_unix():
            # Never synchronised and behind the cloud: even the time a frame
            # was made is a better clock than 2000-01-01 plus uptime.
            self._sync(frame["ts"], "cloud")
        ftype = frame["type"]
        if ftype == "ack":
            self._on_ack(frame)
        elif ftype == "chunk":
            if self.ota is not None:
                self.ota.chunk(frame)
        else:  # a config frame or a command: code a terminal rarely runs
            from edge import control  # unloaded below

            try:
                if ftype == "config":
                    control.on_config(self, frame, now)
                else:
                    control.on_cmd(self, frame, now)
            finally:
                unload("edge.control", *_CONFIG_MODULES)

    # -- over-the-air update (edge.ota, imported only while one runs) -----------

    def _ota_done(self):
        self.ota = None
        # Give their code back to the heap. edge.unload also drops the package
        # attribute an import made ("from edge import loader"), which kept
        # edge.loader and edge.ed25519 alive when only sys.modules forgot them.
        unload("edge.ota", "edge.ed25519", "edge.loader", "protocol.ota")

    def queue_frame(self, ftype, **fields):
        """Queue an uplink frame of ``ftype`` with the next seq (for edge.ota)."""
        self._enqueue(ftype, self._frame(ftype, self._take_seq(), **fields))

    def send_frame(self, ftype, **fields):
        """Publish a frame at QoS 0 without queueing it; False when offline."""
        return self.session.publish(ftype, self._frame(ftype, self._take_seq(), **fields), 0)

    def reboot_soon(self):
        """Restart once the queue is empty, or after REBOOT_GRACE seconds."""
        self._flush()
        self._reboot_at = self.mono() + REBOOT_GRACE

    def reboot_now(self):
        self._flush()
        self._reboot_at = self.mono()

    # -- clock -----------------------------------------------------------------------

    def _sync(self, unix, source):
        # A batch never spans a clock step: its samples' times are ts + deltas.
        step = int(unix) - self.clock.now_unix()
        if self._bcount and (step or self.clock.unsynced):
            self._flush()
        return self.clock.sync(unix, source)

    def _ntp(self, now):
        try:
            unix = self.hal.ntp_time(self.ntp)
        except OSError as err:
            self._count("ntp")
            self.log("ntp %s: %r" % (self.ntp, err))
            self.next_ntp = now + NTP_RETRY
            return False
        if not self._sync(unix, "ntp"):
            self._count("ntp")
            self.next_ntp = now + NTP_RETRY
            return False
        self.next_ntp = now + max(self.clock.max_age // 2, NTP_RETRY)
        return True


def run(state_dir="", booted=None):
    """Board entry point (the boot loader, ``main.py``, calls it): build the
    board HAL and run forever. ``booted``: the loader's ``{"slot", "trial"}``.

    A board without a valid site configuration prints why and returns to
    the REPL, where the installer can reach it.
    """
    from edge.board.hal import BoardHal

    hal = BoardHal(state_dir)
    try:
        agent = Agent(hal, state_dir, log=print, booted=booted)
    except ConfigError as err:
        print("mimamori: cannot start:", err)
        return
    agent.run_forever()
