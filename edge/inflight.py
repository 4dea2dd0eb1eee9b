"""Frames the broker accepted that the cloud has not acknowledged yet.

A PUBACK is not proof of storage (a broker crash loses what it had
acknowledged), so a queued frame leaves the outbox only when the cloud's
``ack`` frame names its (boot, seq). Meanwhile it is *in flight*. Policy
(docs/agent.md): at most ``size`` frames in flight; after every connect,
and when the oldest waited ``timeout`` s, everything unacknowledged goes
again from the oldest (``go_back``); a timeout without any ack since the
last one doubles the timeout up to ``max_timeout``, any ack resets it. An
ack for a frame not listed is ignored (it goes again). Nothing here needs
to survive a reboot: the frames are still in the outbox.
"""

from protocol.frames import acked as _covered


class Inflight:
    """In-flight frames of one terminal, in send order::

        for rid, kind, payload in outbox.peek(min(DRAIN, fl.room()), fl.cursor):
            publish(kind, payload)            # QoS 1, PUBACKed
            fl.sent(rid, boot, seq, now)      # boot, seq: frames.head(payload)
        outbox.ack(fl.apply(ack["for_boot"], ack["ranges"]))
        if fl.expired(now): fl.timed_out()
        on every (re)connect: fl.go_back()

    ``now``: the agent's monotonic seconds. Bad constructor values raise
    ValueError. Counters: ``timeouts`` (go-backs because no ack came),
    ``acked``. RAM: four int lists of at most ``size`` entries.
    """

    def __init__(self, size=32, timeout=60, max_timeout=1800):
        if size < 1 or not 0 < timeout <= max_timeout:
            raise ValueError("need size >= 1 and 0 < timeout <= max_timeout")
        self.size = size
        self.base = timeout
        self.max_timeout = max_timeout
        self.timeout = timeout  # the current one, grown by timeouts without any ack
        self.cursor = 0  # highest outbox id sent since the last go-back
        self._rids = []  # type: list
        self._boots = []  # type: list
        self._seqs = []  # type: list
        self._at = []  # type: list
        self._progress = False  # an ack arrived since the last timeout
        self.timeouts = 0
        self.acked = 0

    def __len__(self):
        return len(self._rids)

    def room(self):
        """How many more frames may be sent before the window is full."""
        return self.size - len(self._rids)

    def sent(self, rid, boot, seq, now):
        """Outbox record ``rid``, frame (``boot``, ``seq``), was PUBACKed at ``now``."""
        self._rids.append(rid)
        self._boots.append(boot)
        self._seqs.append(seq)
        self._at.append(now)
        self.cursor = max(self.cursor, rid)

    def apply(self, boot, ranges):
        """Take an ack (``for_boot``, ``ranges`` of ``[first, count]``); return
        the outbox ids it covers, now out of the list (pass them to ``ack``)."""
        done = []
        keep = 0
        rids, boots, seqs, at = self._rids, self._boots, self._seqs, self._at
        for i in range(len(rids)):
            if boots[i] == boot and _covered(ranges, seqs[i]):
                done.append(rids[i])
                continue
            rids[keep] = rids[i]  # compact in place: no new lists per ack
            boots[keep] = boots[i]
            seqs[keep] = seqs[i]
            at[keep] = at[i]
            keep += 1
        if done:
            del rids[keep:], boots[keep:], seqs[keep:], at[keep:]
            self.acked += len(done)
            self._progress = True
            self.timeout = self.base
        return done

    def expired(self, now):
        """True when the oldest frame in flight has waited ``timeout`` seconds."""
        return bool(self._at) and now - self._at[0] >= self.timeout

    def timed_out(self):
        """Go back after :meth:`expired`; grow the timeout if no ack came since the last one."""
        if not self._progress:
            t = self.timeout * 2
            self.timeout = t if t < self.max_timeout else self.max_timeout
        self._progress = False
        self.timeouts += 1
        self.go_back()

    def go_back(self):
        """Forget what is in flight: the next frames sent are the oldest unacknowledged."""
        del self._rids[:], self._boots[:], self._seqs[:], self._at[:]
        self.cursor = 0
