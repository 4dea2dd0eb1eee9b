"""Webhook signatures: HMAC-SHA256 over timestamp and body, checked the receiver's way."""

from __future__ import annotations

import hashlib
import hmac

from cloud.notify.webhook import sign, verify

SECRET = "s3cret-s3cret-s3cret"
BODY = b'[{"bn":"mimamori:T0001:","bt":1764201600,"n":"io","u":"mA","v":1.2}]'
TS = 1764201600


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), b"1764201600." + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, TS) == "sha256=" + expected


def test_verify_accepts_a_fresh_valid_signature():
    assert verify(SECRET, BODY, str(TS), sign(SECRET, BODY, TS), now=TS + 10)


def test_verify_refuses_tampering_wrong_secret_replay_and_garbage():
    good = sign(SECRET, BODY, TS)
    assert not verify(SECRET, BODY + b" ", str(TS), good, now=TS)
    assert not verify("another-secret-value", BODY, str(TS), good, now=TS)
    assert not verify(SECRET, BODY, str(TS + 1), good, now=TS)  # timestamp is signed
    assert not verify(SECRET, BODY, str(TS), good, now=TS + 301)  # replayed later
    assert not verify(SECRET, BODY, "soon", good, now=TS)
    assert not verify(SECRET, BODY, None, good, now=TS)
    assert not verify(SECRET, BODY, str(TS), "sha256=00", now=TS)
