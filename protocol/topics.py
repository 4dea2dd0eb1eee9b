"""MQTT topic scheme: build, parse and check topics against frames.

::

    mm/v1/<tid>/up/<kind>      terminal -> cloud, kind in UPLINK_KINDS
    mm/v1/<tid>/down/config    cloud -> terminal, retained
    mm/v1/<tid>/down/cmd       cloud -> terminal
    mm/v1/<tid>/down/ack       cloud -> terminal, QoS 0: frames the cloud has decided

``death`` is the terminal's MQTT last will on ``mm/v1/<tid>/up/death``.
The terminal id is also the terminal's MQTT username, so one broker ACL
pattern (``ACL_TERMINAL_WRITE``/``ACL_TERMINAL_READ`` with ``%u``) confines
every terminal to its own topics.  All failures raise ProtocolError
``bad_topic`` (``bad_tid`` for a bad id given to a builder, ``tid_mismatch``
in :func:`check_frame_topic`).
"""

from protocol.errors import ProtocolError
from protocol.frames import DOWNLINK_TYPES, UPLINK_TYPES, check_tid

PREFIX = "mm/v1"
UP = "up"
DOWN = "down"
UPLINK_KINDS = UPLINK_TYPES  # the kind is the frame type
DOWNLINK_KINDS = DOWNLINK_TYPES
RETAINED_KINDS = ("config",)  # the broker keeps the last config for the next connect
ACK_QOS = 0  # a lost ack costs a resend, which the cloud's dedup drops

UPLINK_FILTER = PREFIX + "/+/up/#"  # what the cloud ingest subscribes to
ACL_TERMINAL_WRITE = PREFIX + "/%u/up/#"
ACL_TERMINAL_READ = PREFIX + "/%u/down/#"


def uplink(tid, kind):
    """Topic a terminal publishes ``kind`` frames on."""
    if kind not in UPLINK_KINDS:
        raise ProtocolError("bad_topic", "up_kind", kind)
    return PREFIX + "/" + check_tid(tid) + "/up/" + kind


def downlink(tid, kind):
    """Topic the cloud publishes ``kind`` (config, cmd or ack) frames on."""
    if kind not in DOWNLINK_KINDS:
        raise ProtocolError("bad_topic", "down_kind", kind)
    return PREFIX + "/" + check_tid(tid) + "/down/" + kind


def downlink_filter(tid):
    """Subscription filter for a terminal: its config, commands and acks."""
    return PREFIX + "/" + check_tid(tid) + "/down/#"


def shared_uplink_filter(group):
    """MQTT v5 shared subscription, so ingest workers in ``group`` split the load."""
    if not isinstance(group, str) or not group or "/" in group or "+" in group or "#" in group:
        raise ProtocolError("bad_topic", "share")
    return "$share/" + group + "/" + UPLINK_FILTER


def parse(topic):
    """Split a concrete topic into ``(tid, direction, kind)``.

    ``direction`` is ``"up"`` or ``"down"``.  Raises ``bad_topic`` for
    anything outside the scheme, including a malformed terminal id.
    """
    if not isinstance(topic, str):
        raise ProtocolError("bad_topic", "topic_str")
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] + "/" + parts[1] != PREFIX:
        raise ProtocolError("bad_topic", "scheme", topic, PREFIX)
    tid, direction, kind = parts[2], parts[3], parts[4]
    if not _valid_tid(tid):
        raise ProtocolError("bad_topic", "topic_tid", topic)
    if direction == UP:
        known = kind in UPLINK_KINDS
    elif direction == DOWN:
        known = kind in DOWNLINK_KINDS
    else:
        raise ProtocolError("bad_topic", "direction", topic)
    if not known:
        raise ProtocolError("bad_topic", "topic_kind", topic, direction, kind)
    return tid, direction, kind


def _valid_tid(tid):
    try:
        check_tid(tid)
    except ProtocolError:
        return False
    return True


def check_frame_topic(topic, frame):
    """Check that ``frame`` (a decoded dict) may travel on ``topic``.

    Raises ``bad_topic`` when the topic is malformed or its kind is not the
    frame's type, ``tid_mismatch`` when the terminal ids differ (a terminal
    must not speak for another).  Returns the parsed ``(tid, direction, kind)``.
    """
    tid, direction, kind = parse(topic)
    if frame.get("type") != kind:
        raise ProtocolError("bad_topic", "frame_kind", frame.get("type"), kind, topic)
    if frame.get("tid") != tid:
        raise ProtocolError("tid_mismatch", "tid_topic", frame.get("tid"), tid)
    return tid, direction, kind
