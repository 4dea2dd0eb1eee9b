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
this boot's birth frame first. Then :meth:`Agent.step` does one bounded
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

import os

from edge import FIRMWARE_VERSION, unload
from edge.alarms import Evaluator
from edge.bus import Bus, Poller
from edge.clock import Clock, Monotonic
from edge.errors import ConfigError
from edge.inflight import Inflight
from edge.outbox import Outbox
from edge.session import DROPPED, FAILED, Session
from protocol import batch, frames, topics
from protocol.errors import ProtocolError
from protocol.limits import MAX_COUNTERS, MAX_SAMPLES, MAX_TEXT, U32_MAX

DRAIN = 8  # frames published per step at most
WINDOW = 32  # frames published and not yet acknowledged by the cloud, at most
ACK_TIMEOUT = 60  # seconds without an ack before the unacknowledged frames go again
ACK_TIMEOUT_MAX = 1800  # the timeout doubles up to this while no ack comes at all
IDLE_MS = 100  # longest sleep: how late a sample or a command may be handled
WDT_MS = 120000  # watchdog: a step blocks at most a few network timeouts
KEEPALIVE = 120  # MQTT keepalive, seconds
NTP_RETRY = 300  # seconds between NTP attempts while it fails
REBOOT_GRACE = 10  # seconds a reboot waits for the queue to drain
MAX_INBOX = 8  # downlink messages kept between two steps
MAX_INTERNAL = 50  # internal errors, each within a minute of the last, that reboot
BOOT_FILE = "boot"
# Configuration code (the store, the schemas, the sensor profiles) runs at
# boot and for a config frame only; between those its ~17 KB of code leave
# the heap (edge.unload).
_CONFIG_MODULES = ("edge.config", "protocol.config", "edge.profiles")
_FAR = 0x3FFFFFFF  # "never" in mono seconds, still a small int on 32-bit ports

_UNREACHABLE = frames.UNREACHABLE
_OUT_OF_RANGE = frames.OUT_OF_RANGE
_CMDS = ("reboot", "sample_now", "resync_clock", "rebirth", "ota", "ota_cancel")
OTA_JOB = "ota/job.json"  # an update under way (edge.ota): resumed at boot


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

    def __init__(self, hal, state_dir="", log=None, booted=None):
        self.hal = hal
        self.booted = booted  # from the boot loader (edge.loader); None: cannot update OTA
        self.ota = None  # edge.ota.Updater, only while an update runs
        self.log = log or _quiet
        self.dir = state_dir.rstrip("/")
        self.errors = {}
        from edge.config import ConfigStore  # unloaded at the end: see _CONFIG_MODULES

        store = ConfigStore(self.dir)
        cfg = store.load()
        self.config = cfg  # the configuration in force: {"site": ..., "cloud": ...}
        site = cfg["site"]
        self.site = site
        self.tid = site["terminal_id"]
        if store.warning:
            self._count("bad_config")
            self.log(store.warning)
        self.boot = next_boot(self._path(BOOT_FILE))
        self.seq = 0
        self.mono = Monotonic(hal.ticks_ms, hal.ticks_diff)
        clk = site["clock"]
        self.clock = Clock(
            self.mono,
            rtc=hal.rtc,
            rtc_epoch=hal.rtc_epoch,
            max_age=clk["max_age"],
            on_sync=hal.set_rtc,
        )
        self.ntp = clk["ntp"]
        self.wdt = hal.watchdog(WDT_MS)
        self.cfg_version = cfg["cloud"]["version"]
        self._sensors(site, store)
        self.evaluator = Evaluator(unreach_after=site["sample"]["unreachable_after"])
        # outbox_crash: a power-cut test hook only the host HAL may have (HIL suite)
        self.outbox = Outbox(
            self._path("outbox"),
            budget=site["outbox"]["budget"],
            keep=("alarm", "birth"),
            crash=getattr(hal, "outbox_crash", None),
        )
        self._dropped0 = self.outbox.dropped
        self.inflight = Inflight(WINDOW, ACK_TIMEOUT, ACK_TIMEOUT_MAX)
        self.session = Session(
            self._client,
            self.tid,
            hal.ticks_ms,
            hal.ticks_diff,
            hal.random,
            keepalive=KEEPALIVE,
            max_inbox=MAX_INBOX,
        )
        now = self.mono()
        self.heartbeat = 300
        self.upload = 60
        self.next_status = now
        self.next_ntp = now
        self._reboot_at = None
        self._internal = 0  # internal errors in the current run of trouble
        self._internal_at = 0
        self._batch_reset()
        self._configure(cfg["cloud"], now)
        self.next_status = now + self.heartbeat
        if self.ntp and hal.network_up():
            self._ntp(now)
        # The boot's birth leads its frames in the queue (protocol section 2).
        self._enqueue("birth", self._birth(self._take_seq()))
        try:
            os.stat(self._path(OTA_JOB))
        except OSError:
            pass
        else:
            self._ota()  # resume a download, or confirm / report a switch
        self.log(
            "boot %d of %s, %d channels, %d frames queued"
            % (self.boot, self.tid, len(self.names), self.outbox.depth)
        )
        unload(*_CONFIG_MODULES)  # gone once the store above goes out of scope

    # -- set-up ------------------------------------------------------------------

    def _path(self, name):
        return self.dir + "/" + name if self.dir else name

    def _sensors(self, site, store):
        """Bus, one poller per device (each keeps its own schedule), channel table."""
        table = store.table  # the profiles the site was checked with
        if table is None:  # a store given its own points() keeps none
            from edge.config import site_table  # unloaded after boot: see _CONFIG_MODULES

            table = site_table(site, site_dir=store.site_dir)
        bus_cfg = site["bus"]
        self.link = self.hal.open_link(bus_cfg)
        hal = self.hal
        self.bus = Bus(
            self.link,
            hal.ticks_ms,
            sleep_ms=hal.sleep_ms,
            ticks_diff=hal.ticks_diff,
            baud=bus_cfg["baud"],
            timeout_ms=bus_cfg["timeout_ms"],
            retries=bus_cfg["retries"],
        )
        self.pollers = []
        self.dev_base = []  # alias of each device's first point
        self.names = []  # type: list
        self.channels = []  # birth rows
        self.devices = []  # the birth's devices: which profile each is polled with
        self.exps = []
        self.aliases = {}
        for dev in site["wiring"]:
            profile = table[dev["profile"]]
            self.pollers.append(
                Poller(
                    self.bus,
                    [{"name": dev["name"], "unit": dev["unit"], "model": dev["profile"]}],
                    profiles=table,
                )
            )
            self.dev_base.append(len(self.names))
            self.devices.append(
                {"name": dev["name"], "model": dev["profile"], "status": profile["status"]}
            )
            for p in profile["points"]:
                alias = len(self.names)
                name = dev["name"] + "." + p["name"]
                kind = p["kind"] if p["kind"] in frames.KINDS else "other"
                self.channels.append(
                    {"alias": alias, "name": name, "unit": p["unit"], "kind": kind, "exp": p["exp"]}
                )
                self.names.append(name)
                self.exps.append(p["exp"])
                self.aliases[name] = alias
        n = len(self.names)
        self.interval = [site["sample"]["interval"]] * n
        self.ch_next = [0] * n  # mono second each channel is next due
        self.dev_next = [0] * len(self.pollers)
        self._vals = [None] * n  # the sample being built, reused
        self._qual = []
        problem = None
        try:
            self._birth(0)
        except ProtocolError as err:
            problem = str(err)  # e.g. a 32-character device and a 32-character point name
        if problem is not None:  # raised outside the except: MicroPython warns on chaining
            raise ConfigError("site: channel table does not fit a birth frame: %s" % problem)

    def _client(self, keepalive):
        return self.hal.mqtt_client(
            self.tid, self.site["broker"], self.site["credentials"], keepalive
        )

    def _configure(self, cloud, now):
        """Put a validated cloud part in force: intervals, heartbeat, thresholds."""
        self.cfg_version = cloud["version"]
        self.heartbeat = cloud["heartbeat"]
        self.upload = cloud["upload"]
        default = self.site["sample"]["interval"]
        for a in range(len(self.interval)):
            self.interval[a] = default
        for name, secs in cloud["sampling"].items():
            self.interval[self.aliases[name]] = secs
        for a in range(len(self.ch_next)):
            self.ch_next[a] = min(self.ch_next[a], now + self.interval[a])
        self._plan_devices()
        self.next_status = min(self.next_status, now + self.heartbeat)
        specs = [self._scaled(t) for t in cloud["thresholds"]]
        unix = self.clock.now_unix() if self.clock.synced else None
        events = self.evaluator.configure(specs, self.aliases, now, unix)
        self._alarms(events)
        if self._bcount and (self.upload == 0 or now - self._bt0 >= self.upload):
            self._flush()

    def _plan_devices(self):
        for d in range(len(self.pollers)):
            base = self.dev_base[d]
            end = self.dev_base[d + 1] if d + 1 < len(self.dev_base) else len(self.ch_next)
            self.dev_next[d] = min(self.ch_next[base:end])

    def _scaled(self, t):
        """A threshold rule in raw counts, the unit samples and alarm frames use.

        Thresholds come in engineering units; scaling them once here keeps
        float arithmetic off the per-sample path and gives the cloud raw
        values and thresholds in the alarm frame, as the protocol says.
        """
        e = self.exps[self.aliases[t["channel"]]]
        s = dict(t)
        for key in ("warn", "alarm", "hyst"):
            s[key] = _raw(t[key], e)
        ov = t["override"]
        if ov is not None:
            ov = dict(ov)
            for key in ("warn", "alarm"):
                ov[key] = _raw(ov[key], e)
            s["override"] = ov
        return s

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
        vals = self._vals
        qual = self._qual
        got = 0
        events = None
        for d in range(len(self.pollers)):
            if not force and now < self.dev_next[d]:
                continue
            if not got:
                for a in range(len(vals)):
                    vals[a] = None
                del qual[:]
            results = self.pollers[d].poll()[0]
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
        return self._frame(
            "birth",
            seq,
            fw=firmware_name(),
            cfg=self.cfg_version,
            channels=self.channels,
            devices=self.devices,
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
        elif ftype == "config":
            self._on_config(frame, now)
        else:
            self._on_cmd(frame, now)

    def _on_config(self, frame, now):
        from edge.config import ConfigStore  # unloaded below: see _CONFIG_MODULES

        version = frame["version"]
        store = ConfigStore(self.dir)
        try:
            store.resume(self.config)
        except ConfigError as err:  # a profile file on flash went bad since boot
            ok, reason = False, str(err)
        else:
            ok, reason = store.apply_cloud(frame["config"], version)
            self.config = store.config
        unload(*_CONFIG_MODULES)  # gone once this returns
        if ok and reason == "applied":
            self._configure(self.config["cloud"], now)
        if not ok:
            self._count("bad_config")
        self.log("config v%d: %s" % (version, reason))
        self._enqueue(
            "cfgack",
            self._frame(
                "cfgack", self._take_seq(), version=version, ok=ok, reason=clip(reason, MAX_TEXT)
            ),
        )

    def _on_cmd(self, frame, now):
        name = frame["name"]
        args = frame["args"]
        ok = True
        result = None  # type: object
        rebirth = False
        if name == "reboot":
            self.reboot_soon()
        elif name == "sample_now":
            self._flush()
            result = {"channels": self._sample(now, True)}
            self._flush()
        elif name == "resync_clock":
            ok, result = self._resync(args, now)
        elif name == "rebirth":
            rebirth = True
        elif name == "ota":
            ok, result = self._ota().offer(args)
        elif name == "ota_cancel":
            ok, result = self._ota().cancel(args)
        else:
            ok = False
            result = "unknown command"
            self._count("unknown_cmd")
        self.log("command %d %s: %s" % (frame["id"], name, "ok" if ok else result))
        self._enqueue(
            "cmdres", self._frame("cmdres", self._take_seq(), id=frame["id"], ok=ok, result=result)
        )
        if rebirth:
            self._enqueue("birth", self._birth(self._take_seq()))

    # -- over-the-air update (edge.ota, imported only while one runs) -----------

    def _ota(self):
        if self.ota is None:
            from edge.ota import Updater

            self.ota = Updater(self, self.booted)
        return self.ota

    def _ota_done(self):
        self.ota = None
        import sys

        for name in ("edge.ota", "edge.ed25519"):  # give their code back to the heap
            sys.modules.pop(name, None)

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

    def _resync(self, args, now):
        t = args.get("time")
        if t is None:
            if not self.ntp:
                return False, "no time given and NTP is disabled"
            if not self._ntp(now):
                return False, "NTP server did not answer"
        elif isinstance(t, bool) or not isinstance(t, (int, float)):
            self._count("bad_cmd")
            return False, "bad args: time must be Unix seconds"
        elif not self._sync(t, "cloud"):
            return False, "time out of range"
        return True, {"step": self.clock.last_step, "source": self.clock.source}

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


def _raw(x, e):
    """Engineering value ``x`` in raw counts of exponent ``e`` (exact where it can be)."""
    if x is None or e == 0:
        return x
    y = x * 10**-e if e < 0 else x / 10**e
    if isinstance(y, float):
        r = round(y)
        if abs(y - r) <= 1e-9 * (abs(y) + 1):
            return r
    return y


def firmware_name():
    """The birth's ``fw``: this firmware's version and the interpreter it runs on,
    e.g. ``0.1.0 micropython 1.27.0 esp32`` or ``0.1.0 cpython 3.11.2 linux``, so
    the cloud can tell boards from virtual terminals."""
    import sys

    impl = sys.implementation
    v = impl.version
    name = "%s %s %d.%d.%d %s" % (FIRMWARE_VERSION, impl.name, v[0], v[1], v[2], sys.platform)
    return clip(name, 64)


def clip(text, limit):
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    if len(text) > limit:
        text = text[:limit]
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


def next_boot(path):
    """Read, increment and persist the boot counter at ``path``; return the new value.

    Written to ``path.tmp`` and renamed, so a power cut leaves the old or
    the new value. Both files are read and the larger valid number wins: a
    counter that went backwards would make the cloud drop this boot's frames
    as repeats of an older boot's.
    """
    last = 0
    for name in (path, path + ".tmp"):
        try:
            with open(name) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > last:
            last = int(text)
    boot = (last + 1) & U32_MAX
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % boot)
        f.flush()
    try:
        try:
            os.rename(tmp, path)
        except OSError:  # FAT cannot rename over a file
            os.remove(path)
            os.rename(tmp, path)
    except OSError:
        pass  # the .tmp holds the value; the next boot reads it
    return boot


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
