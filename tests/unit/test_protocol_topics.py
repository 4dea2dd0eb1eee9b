"""Topic scheme: builders, parser, frame/topic checks, and filters as MQTT matches them."""

import pytest
from hypothesis import given
from paho.mqtt.client import topic_matches_sub

from protocol import topics
from protocol.errors import ProtocolError
from tests.support.protocol import tids

FRAME = {
    "type": "data",
    "tid": "T0001",
    "boot": 1,
    "seq": 1,
    "ts": 0,
    "unsynced": False,
    "samples": [{"dt": 0, "values": []}],
}


def _reason(fn, *args):
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value.reason


def test_topic_strings():
    assert topics.uplink("T0001", "data") == "mm/v1/T0001/up/data"
    assert topics.uplink("T0001", "death") == "mm/v1/T0001/up/death"
    assert topics.downlink("T0001", "config") == "mm/v1/T0001/down/config"
    assert topics.downlink("T0001", "cmd") == "mm/v1/T0001/down/cmd"
    assert topics.downlink_filter("T0001") == "mm/v1/T0001/down/#"
    assert topics.UPLINK_FILTER == "mm/v1/+/up/#"
    assert topics.shared_uplink_filter("ingest") == "$share/ingest/mm/v1/+/up/#"
    assert topics.RETAINED_KINDS == ("config",)


@given(tids)
def test_build_then_parse(tid):
    for kind in topics.UPLINK_KINDS:
        assert topics.parse(topics.uplink(tid, kind)) == (tid, "up", kind)
    for kind in topics.DOWNLINK_KINDS:
        assert topics.parse(topics.downlink(tid, kind)) == (tid, "down", kind)


@given(tids)
def test_filters_match_exactly_their_direction(tid):
    # paho's own matcher stands in for the broker
    for kind in topics.UPLINK_KINDS:
        t = topics.uplink(tid, kind)
        assert topic_matches_sub(topics.UPLINK_FILTER, t)
        assert topic_matches_sub(topics.ACL_TERMINAL_WRITE.replace("%u", tid), t)
        assert not topic_matches_sub(topics.downlink_filter(tid), t)
        assert not topic_matches_sub(topics.ACL_TERMINAL_WRITE.replace("%u", tid + "x"), t)
    for kind in topics.DOWNLINK_KINDS:
        t = topics.downlink(tid, kind)
        assert topic_matches_sub(topics.downlink_filter(tid), t)
        assert topic_matches_sub(topics.ACL_TERMINAL_READ.replace("%u", tid), t)
        assert not topic_matches_sub(topics.UPLINK_FILTER, t)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "mm/v1/T0001/up",
        "mm/v1/T0001/up/data/x",
        "mm/v2/T0001/up/data",
        "xx/v1/T0001/up/data",
        "mm/v1//up/data",
        "mm/v1/T 1/up/data",
        "mm/v1/+/up/data",
        "mm/v1/#/up/data",
        "mm/v1/" + "T" * 33 + "/up/data",
        "mm/v1/T0001/sideways/data",
        "mm/v1/T0001/up/config",
        "mm/v1/T0001/down/data",
        "mm/v1/T0001/up/DATA",
        "/mm/v1/T0001/up/data",
        None,
    ],
)
def test_parse_refuses(topic):
    assert _reason(topics.parse, topic) == "bad_topic"


def test_builders_refuse_bad_ids_and_kinds():
    assert _reason(topics.uplink, "T/1", "data") == "bad_tid"
    assert _reason(topics.uplink, "T0001", "config") == "bad_topic"
    assert _reason(topics.downlink, "T0001", "data") == "bad_topic"
    assert _reason(topics.downlink, "", "cmd") == "bad_tid"
    for group in ("", "a/b", "a+", "#", None):
        assert _reason(topics.shared_uplink_filter, group) == "bad_topic"


def test_frame_topic_check():
    assert topics.check_frame_topic("mm/v1/T0001/up/data", FRAME) == ("T0001", "up", "data")
    assert _reason(topics.check_frame_topic, "mm/v1/T0002/up/data", FRAME) == "tid_mismatch"
    assert _reason(topics.check_frame_topic, "mm/v1/T0001/up/alarm", FRAME) == "bad_topic"
    assert _reason(topics.check_frame_topic, "mm/v1/T0001/down/cmd", FRAME) == "bad_topic"
    cmd = dict(FRAME, type="cmd")
    assert topics.check_frame_topic("mm/v1/T0001/down/cmd", cmd)[1] == "down"
