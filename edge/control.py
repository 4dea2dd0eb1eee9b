"""The agent's rarely run half: start-up, a config frame, a command.

:class:`edge.agent.Agent` imports this module for its construction, for a
config frame and for a command, and unloads it after each (``edge.unload``,
docs/agent.md "Memory"): on a board a loaded module's code stays on the
heap, and none of this runs while the terminal samples and publishes. The
functions take the agent as their first argument and work on its state as
its methods would; they keep no object of their own on the agent (the
sampling loop holds nothing of this module once it returns).
"""

import os

from edge import FIRMWARE_VERSION
from edge.errors import ConfigError
from protocol import frames
from protocol.errors import ProtocolError
from protocol.limits import MAX_TEXT, U32_MAX

# The agent's limits, set on it at start-up (docs/agent.md).
WINDOW = 32  # frames published and not yet acknowledged by the cloud, at most
ACK_TIMEOUT = 60  # seconds without an ack before the unacknowledged frames go again
ACK_TIMEOUT_MAX = 1800  # the timeout doubles up to this while no ack comes at all
WDT_MS = 120000  # watchdog: a step blocks at most a few network timeouts
KEEPALIVE = 120  # MQTT keepalive, seconds
MAX_INBOX = 8  # downlink messages kept between two steps
BOOT_FILE = "boot"
OTA_JOB = "ota/job.json"  # an update under way (edge.ota): resumed at boot (start)


def start(agent, hal, state_dir, log, booted):
    """Build ``agent`` (what ``Agent(...)`` promises): read the configuration,
    count the boot, open the bus, the outbox and the session, put the cloud
    part in force and queue this boot's birth. Raises ConfigError or OSError
    as ``Agent`` documents."""
    from edge.alarms import Evaluator
    from edge.clock import Clock, Monotonic
    from edge.config import ConfigStore  # unloaded by the agent after boot
    from edge.inflight import Inflight
    from edge.outbox import Outbox
    from edge.session import Session

    agent.hal = hal
    agent.booted = booted  # from the boot loader (edge.loader); None: cannot update OTA
    agent.ota = None  # edge.ota.Updater, only while an update runs
    agent.log = log
    agent.dir = state_dir.rstrip("/")
    agent.errors = {}
    store = ConfigStore(agent.dir)
    cfg = store.load()
    agent.config = cfg  # the configuration in force: {"site": ..., "cloud": ...}
    site = cfg["site"]
    agent.site = site
    agent.tid = site["terminal_id"]
    if store.warning:
        agent._count("bad_config")
        log(store.warning)
    agent.boot = next_boot(agent._path(BOOT_FILE))
    agent.seq = 0
    agent.fw = firmware_name()  # the birth's fw, made once
    agent.mono = Monotonic(hal.ticks_ms, hal.ticks_diff)
    clk = site["clock"]
    agent.clock = Clock(
        agent.mono,
        rtc=hal.rtc,
        rtc_epoch=hal.rtc_epoch,
        max_age=clk["max_age"],
        on_sync=hal.set_rtc,
    )
    agent.ntp = clk["ntp"]
    agent.wdt = hal.watchdog(WDT_MS)
    agent.cfg_version = cfg["cloud"]["version"]
    _sensors(agent, site, store)
    agent.evaluator = Evaluator(unreach_after=site["sample"]["unreachable_after"])
    # outbox_crash: a power-cut test hook only the host HAL may have (HIL suite)
    agent.outbox = Outbox(
        agent._path("outbox"),
        budget=site["outbox"]["budget"],
        keep=("alarm", "birth"),
        crash=getattr(hal, "outbox_crash", None),
    )
    agent._dropped0 = agent.outbox.dropped
    agent.inflight = Inflight(WINDOW, ACK_TIMEOUT, ACK_TIMEOUT_MAX)
    agent.session = Session(
        agent._client,
        agent.tid,
        hal.ticks_ms,
        hal.ticks_diff,
        hal.random,
        keepalive=KEEPALIVE,
        max_inbox=MAX_INBOX,
    )
    now = agent.mono()
    agent.heartbeat = 300
    agent.upload = 60
    agent.next_status = now
    agent.next_ntp = now
    agent._reboot_at = None
    agent._internal = 0  # internal errors in the current run of trouble
    agent._internal_at = 0
    agent._batch_reset()
    configure(agent, cfg["cloud"], now)
    agent.next_status = now + agent.heartbeat
    if agent.ntp and hal.network_up():
        agent._ntp(now)
    # The boot's birth leads its frames in the queue (protocol section 2).
    agent._enqueue("birth", agent._birth(agent._take_seq()))
    try:
        os.stat(agent._path(OTA_JOB))
    except OSError:
        pass
    else:
        ota(agent)  # resume a download, or confirm / report a switch
    log(
        "boot %d of %s, %d channels, %d frames queued"
        % (agent.boot, agent.tid, len(agent.channels), agent.outbox.depth)
    )


def _sensors(agent, site, store):
    """Bus, its poller (each device keeps its own schedule), channel table."""
    from edge.bus import Bus, Poller

    table = store.table  # the profiles the site was checked with
    if table is None:  # a store given its own points() keeps none
        from edge.config import site_table  # unloaded after boot by the agent

        table = site_table(site, site_dir=store.site_dir)
    bus_cfg = site["bus"]
    hal = agent.hal
    agent.link = hal.open_link(bus_cfg)
    agent.bus = bus = Bus(
        agent.link,
        hal.ticks_ms,
        sleep_ms=hal.sleep_ms,
        ticks_diff=hal.ticks_diff,
        baud=bus_cfg["baud"],
        timeout_ms=bus_cfg["timeout_ms"],
        retries=bus_cfg["retries"],
    )
    agent.dev_base = dev_base = []  # alias of each device's first point
    # The birth's tables as tuples, the alias being the index: a third of
    # the heap dicts would take, for as long as the terminal runs (the
    # birth goes again after every connect; Agent._birth makes its rows).
    channels = []  # type: list
    agent.channels = channels  # (name, unit, kind, exp) per channel
    agent.devices = devices = []  # (name, model, status): which profile each is polled with
    wiring = site["wiring"]
    # One poller for the bus; the agent reads each device on its own
    # schedule (Poller.poll_device). Names and units are unique (edge.config);
    # a site with nothing wired yet still boots, births and reports.
    agent.poller = None
    if wiring:
        agent.poller = Poller(
            bus,
            [{"name": d["name"], "unit": d["unit"], "model": d["profile"]} for d in wiring],
            profiles=table,
        )
    for dev in wiring:
        profile = table[dev["profile"]]
        dev_base.append(len(channels))
        devices.append((dev["name"], dev["profile"], profile["status"]))
        for p in profile["points"]:
            kind = p["kind"] if p["kind"] in frames.KINDS else "other"
            channels.append((dev["name"] + "." + p["name"], p["unit"], kind, p["exp"]))
    n = len(channels)
    agent.interval = [site["sample"]["interval"]] * n
    agent.ch_next = [0] * n  # mono second each channel is next due
    agent.dev_next = [0] * len(wiring)  # mono second each device is next due
    agent._vals = [None] * n  # the sample being built, reused
    agent._qual = []
    problem = None
    try:
        agent._birth(0)
    except ProtocolError as err:
        problem = str(err)  # e.g. a 32-character device and a 32-character point name
    if problem is not None:  # raised outside the except: MicroPython warns on chaining
        raise ConfigError("site: channel table does not fit a birth frame: %s" % problem)


def configure(agent, cloud, now):
    """Put a validated cloud part in force: intervals, heartbeat, thresholds."""
    agent.cfg_version = cloud["version"]
    agent.heartbeat = cloud["heartbeat"]
    agent.upload = cloud["upload"]
    interval = agent.interval
    ch_next = agent.ch_next
    channels = agent.channels
    aliases = {}  # channel name -> alias, for this call only
    for a in range(len(channels)):
        aliases[channels[a][0]] = a
    default = agent.site["sample"]["interval"]
    for a in range(len(interval)):
        interval[a] = default
    for name, secs in cloud["sampling"].items():
        interval[aliases[name]] = secs
    for a in range(len(ch_next)):
        ch_next[a] = min(ch_next[a], now + interval[a])
    dev_base = agent.dev_base
    for d in range(len(dev_base)):
        end = dev_base[d + 1] if d + 1 < len(dev_base) else len(ch_next)
        agent.dev_next[d] = min(ch_next[dev_base[d] : end])
    agent.next_status = min(agent.next_status, now + agent.heartbeat)
    specs = [_scaled(t, channels[aliases[t["channel"]]][3]) for t in cloud["thresholds"]]
    clock = agent.clock
    unix = clock.now_unix() if clock.synced else None
    events = agent.evaluator.configure(specs, aliases, now, unix)
    agent._alarms(events)
    if agent._bcount and (agent.upload == 0 or now - agent._bt0 >= agent.upload):
        agent._flush()


def _scaled(t, e):
    """A threshold rule in raw counts of exponent ``e``, the unit samples and
    alarm frames use.

    Thresholds come in engineering units; scaling them once here keeps
    float arithmetic off the per-sample path and gives the cloud raw
    values and thresholds in the alarm frame, as the protocol says.
    """
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


# -- downlink: a config frame, a command ---------------------------------------------


def on_config(agent, frame, now):
    """Validate, persist and apply a config frame; queue its ``cfgack``."""
    from edge.config import ConfigStore  # unloaded by the agent after this

    version = frame["version"]
    store = ConfigStore(agent.dir)
    try:
        store.resume(agent.config)
    except ConfigError as err:  # a profile file on flash went bad since boot
        ok, reason = False, str(err)
    else:
        ok, reason = store.apply_cloud(frame["config"], version)
        agent.config = store.config
    if ok and reason == "applied":
        configure(agent, agent.config["cloud"], now)
    if not ok:
        agent._count("bad_config")
    agent.log("config v%d: %s" % (version, reason))
    agent._enqueue(
        "cfgack",
        agent._frame(
            "cfgack", agent._take_seq(), version=version, ok=ok, reason=clip(reason, MAX_TEXT)
        ),
    )


def on_cmd(agent, frame, now):
    """Run a command frame; queue its ``cmdres`` (and a birth for ``rebirth``)."""
    name = frame["name"]
    args = frame["args"]
    ok = True
    result = None  # type: object
    rebirth = False
    if name == "reboot":
        agent.reboot_soon()
    elif name == "sample_now":
        agent._flush()
        result = {"channels": agent._sample(now, True)}
        agent._flush()
    elif name == "resync_clock":
        ok, result = _resync(agent, args, now)
    elif name == "rebirth":
        rebirth = True
    elif name == "ota":
        ok, result = ota(agent).offer(args)
    elif name == "ota_cancel":
        ok, result = ota(agent).cancel(args)
    else:
        ok = False
        result = "unknown command"
        agent._count("unknown_cmd")
    agent.log("command %d %s: %s" % (frame["id"], name, "ok" if ok else result))
    agent._enqueue(
        "cmdres",
        agent._frame("cmdres", agent._take_seq(), id=frame["id"], ok=ok, result=result),
    )
    if rebirth:
        agent._enqueue("birth", agent._birth(agent._take_seq()))


def _resync(agent, args, now):
    t = args.get("time")
    if t is None:
        if not agent.ntp:
            return False, "no time given and NTP is disabled"
        if not agent._ntp(now):
            return False, "NTP server did not answer"
    elif isinstance(t, bool) or not isinstance(t, (int, float)):
        agent._count("bad_cmd")
        return False, "bad args: time must be Unix seconds"
    elif not agent._sync(t, "cloud"):
        return False, "time out of range"
    clock = agent.clock
    return True, {"step": clock.last_step, "source": clock.source}


def ota(agent):
    """The agent's updater (edge.ota), made on first use; the agent drops it when done."""
    if agent.ota is None:
        from edge.ota import Updater

        agent.ota = Updater(agent, agent.booted)
    return agent.ota


# -- boot helpers ----------------------------------------------------------------------


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
