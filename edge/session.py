"""The terminal's MQTT session over a umqtt.simple-compatible client.

One :class:`Session` per terminal. It owns the connection life cycle and
nothing else: which frames to send, and when, is the agent's business.

Client contract (what the HALs provide; ``umqtt.simple.MQTTClient`` plus
``close``)::

    client = factory(keepalive)             # not connected yet
    client.set_callback(f)                  # f(topic: bytes, msg: bytes)
    client.set_last_will(topic, msg, retain, qos)
    client.connect(clean_session)           # returns after CONNACK accepted
    client.subscribe(topic, qos)            # returns after SUBACK
    client.publish(topic, msg, retain, qos) # qos 1: returns after PUBACK
    client.check_msg()                      # one pending packet or None, never blocks long
    client.ping()
    client.disconnect()                     # DISCONNECT: the broker drops the will
    client.close()                          # drop the socket, no DISCONNECT: the will fires

Every method raises ``OSError`` and nothing else when the connection or the
broker fails (a refused CONNACK, a PUBACK that never came, a closed socket);
the board HAL wraps umqtt.simple so its ``MQTTException``, assertion and
index errors become ``OSError`` too.

Life cycle: :meth:`connect` registers the death frame as the last will
(QoS 1, not retained), connects with a clean session, subscribes to
``mm/v1/<tid>/down/#`` at QoS 1 (the broker then delivers the retained
config; commands and the cloud's QoS 0 acks arrive there too) and publishes
the birth frame, before anything else. Any failure
closes the socket and schedules the next attempt with bounded exponential
backoff: ``backoff_min_ms`` doubling to ``backoff_max_ms``, each delay drawn
from its upper half (``base/2 + random(base/2)``), so a fleet that lost the
broker together does not come back in lockstep. A connection that reached
the birth's PUBACK resets the backoff.

Clean sessions, deliberately: commands sent while a terminal is offline are
not replayed hours later (a stale ``reboot`` would surprise), and the config,
being retained, reaches the terminal on every connect anyway; acks sent to
a lost session are lost with it (the agent resends what they covered).
Downlink arriving during ``publish`` (umqtt reads it while it waits for the
PUBACK) lands in the same bounded inbox.
"""

from protocol import topics

# connect() outcomes. Only FAILED leaves no trace at the broker: from
# CONNACK on, the will is armed and its sequence number is spent.
FAILED = 0
DROPPED = 1
UP = 2

_MAX_SHIFT = 20  # 1 s << 20 is far past any sane cap; keeps ints small


class Session:
    """Connection state of one terminal.

    ``factory(keepalive)`` returns a new, unconnected client (see module
    doc); a fresh client per attempt, so no half-dead socket state carries
    over. ``ticks_ms``/``ticks_diff`` are the board's ms clock, ``random(n)``
    returns an int in ``0..n-1`` (jitter). ``max_inbox`` bounds the downlink
    messages kept between two :meth:`take` calls; more are counted in
    ``overflow`` and dropped (the cloud resends what matters: config is
    retained).

    Counters: ``connects`` (sessions that reached the birth's PUBACK),
    ``connect_errors`` (attempts that failed), ``drops`` (established
    sessions lost), ``publish_errors``, ``overflow``.
    """

    def __init__(
        self,
        factory,
        tid,
        ticks_ms,
        ticks_diff,
        random,
        *,
        keepalive=120,
        backoff_min_ms=1000,
        backoff_max_ms=300000,
        max_inbox=8,
    ):
        if not 0 < backoff_min_ms <= backoff_max_ms:
            raise ValueError("need 0 < backoff_min_ms <= backoff_max_ms")
        self._factory = factory
        self._ticks = ticks_ms
        self._diff = ticks_diff
        self._random = random
        self.keepalive = keepalive
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.max_inbox = max_inbox
        # Topics are built once: publishing must not allocate strings.
        self.topics = {}
        for kind in topics.UPLINK_KINDS:
            self.topics[kind] = topics.uplink(tid, kind)
        self.filter = topics.downlink_filter(tid)
        self.client = None
        self.inbox = []
        self.failures = 0  # consecutive failed attempts: the backoff exponent
        self.delay_ms = 0  # the delay chosen by the last failure
        self._next = ticks_ms()  # earliest time of the next attempt
        self._tx = self._next  # last packet sent, for keepalive pings
        self.connects = 0
        self.connect_errors = 0
        self.drops = 0
        self.publish_errors = 0
        self.overflow = 0
        self.last_error = None

    @property
    def up(self):
        """True while a session is established (birth acknowledged)."""
        return self.client is not None

    def wait_ms(self):
        """Milliseconds until the next connect attempt may start (0: now)."""
        left = self._diff(self._next, self._ticks())
        return left if left > 0 else 0

    def connect(self, death, birth):
        """One connect attempt; returns FAILED, DROPPED or UP.

        ``death`` and ``birth`` are the encoded frames for this attempt.
        FAILED: nothing was registered at the broker, the caller may reuse
        the frames' sequence numbers. DROPPED: CONNACK came, so the will is
        armed (and may fire), but the session broke before the birth was
        acknowledged. Only call when :meth:`wait_ms` is 0 and not :attr:`up`.
        """
        client = None
        armed = False
        try:
            client = self._factory(self.keepalive)
            client.set_callback(self._on_message)
            client.set_last_will(self.topics["death"], death, False, 1)
            client.connect(True)
            armed = True
            client.subscribe(self.filter, 1)
            client.publish(self.topics["birth"], birth, False, 1)
        except OSError as err:
            self.connect_errors += 1
            self.last_error = err
            _close(client)
            self._schedule()
            return DROPPED if armed else FAILED
        self.client = client
        self.failures = 0
        self.connects += 1
        self._tx = self._ticks()
        return UP

    def publish(self, kind, payload, qos=1):
        """Publish an uplink frame; True once the broker acknowledged it (QoS 1)
        or it was sent (QoS 0).

        False when not connected or when the publish failed; a failure
        drops the session (the next :meth:`connect` follows the backoff).
        """
        client = self.client
        if client is None:
            return False
        try:
            client.publish(self.topics[kind], payload, False, qos)
        except OSError as err:
            self.publish_errors += 1
            self.last_error = err
            self.drop()
            return False
        self._tx = self._ticks()
        return True

    def poll(self):
        """Read what the broker sent (into :attr:`inbox`) and keep the link alive.

        Reads no more than :attr:`inbox` has room for, so one step stays
        bounded and a flood waits at the broker (TCP flow control) instead
        of being dropped here. A failure drops the session.
        """
        client = self.client
        if client is None:
            return
        try:
            for _ in range(self.max_inbox + 2):  # + PINGRESP and the like
                if len(self.inbox) >= self.max_inbox or client.check_msg() is None:
                    break
            now = self._ticks()
            # umqtt does not ping by itself. At 3/4 of the keepalive: the broker
            # waits 1.5 keepalives, and a terminal that publishes every minute
            # (keepalive 120 s) never needs a ping at all.
            if self._diff(now, self._tx) >= self.keepalive * 750:
                client.ping()
                self._tx = now
        except OSError as err:
            self.last_error = err
            self.drop()

    def take(self):
        """Remove and return the oldest received ``(topic, msg)``, or None."""
        if self.inbox:
            return self.inbox.pop(0)
        return None

    def drop(self):
        """Lose the session as a broken link would: no DISCONNECT, the will fires."""
        if self.client is not None:
            _close(self.client)
            self.client = None
            self.drops += 1
            self._schedule()

    def close(self, clean=False):
        """End the session. ``clean`` sends DISCONNECT, so the broker drops the will."""
        client = self.client
        self.client = None
        if client is None:
            return
        if clean:
            try:
                client.disconnect()
                return
            except OSError:
                pass
        _close(client)

    def _on_message(self, topic, msg):
        if len(self.inbox) >= self.max_inbox:
            self.overflow += 1
            return
        self.inbox.append((topic, msg))

    def _schedule(self):
        n = self.failures if self.failures < _MAX_SHIFT else _MAX_SHIFT
        base = self.backoff_min_ms << n
        base = min(base, self.backoff_max_ms)
        half = base // 2
        self.delay_ms = half + self._random(base - half + 1)
        self.failures += 1
        self._next = self._ticks() + self.delay_ms


def _close(client):
    """Drop ``client``'s connection without DISCONNECT; never raises."""
    if client is None:
        return
    try:
        close = getattr(client, "close", None)
        if close is not None:
            close()
        else:  # plain umqtt.simple: its socket is public
            client.sock.close()
    except (OSError, AttributeError):
        pass
