"""Password hashes made in Python, checked against the real mosquitto_passwd and broker."""

from __future__ import annotations

import base64
import subprocess

import pytest

from cloud.broker import BrokerConfigError, account_from_row, hash_password, verify_password
from cloud.broker.passwd import is_password_hash
from tests.support.broker import MosquittoBroker, connected, require_tool

pytestmark = pytest.mark.integration

PASSWORDS = ["secret", "pässwörd-ユニコード", "x" * 200, "with:colon and space", "$7$not-a-hash"]


def mosquitto_passwd(tmp_path, password, *options):
    """The line the real tool writes for user "u"."""
    tool = require_tool("mosquitto_passwd", "mosquitto-clients")
    path = tmp_path / "pw"
    subprocess.run(
        [tool, *options, "-c", "-b", str(path), "u", password],
        check=True,
        capture_output=True,
        timeout=30,
    )
    user, _, hashed = path.read_text().strip().partition(":")
    assert user == "u"
    return hashed


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("iterations", [101, 1000])
def test_pbkdf2_hash_is_identical_to_mosquitto_passwd(tmp_path, password, iterations):
    options = () if iterations == 101 else ("-I", str(iterations))
    theirs = mosquitto_passwd(tmp_path, password, *options)
    _, kind, iters, salt_b64, _ = theirs.split("$")
    assert (kind, int(iters)) == ("7", iterations)
    ours = hash_password(password, iterations, base64.b64decode(salt_b64))
    assert ours == theirs
    assert verify_password(password, theirs)
    assert not verify_password(password + "x", theirs)


@pytest.mark.parametrize("password", PASSWORDS)
def test_legacy_sha512_hashes_verify(tmp_path, password):
    theirs = mosquitto_passwd(tmp_path, password, "-H", "sha512")
    assert theirs.startswith("$6$")
    assert verify_password(password, theirs)
    assert not verify_password(password[:-1], theirs)


def test_each_hash_gets_a_fresh_salt():
    assert hash_password("same") != hash_password("same")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "plain",
        "$7$101$c2FsdA==",
        "$7$0$c2FsdHNhbHRzYWx0$" + "A" * 88,
        "$7$101$!!!!$" + "A" * 88,
        "$7$101$c2FsdHNhbHRzYWx0$QUJD",
        "$5$abc$def",
    ],
)
def test_malformed_hashes_are_rejected(value):
    assert not is_password_hash(value)
    with pytest.raises(BrokerConfigError):
        verify_password("x", value)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("",), {}),
        (("x", 0), {}),
        (("x",), {"salt": b"short"}),
    ],
)
def test_bad_hash_inputs_raise(args, kwargs):
    with pytest.raises(BrokerConfigError):
        hash_password(*args, **kwargs)


def test_broker_accepts_python_hashes_and_mosquitto_passwd_hashes(tmp_path):
    """Logins work for accounts hashed here (several iteration counts) and for
    a hash taken over from mosquitto_passwd; wrong passwords still fail."""
    imported = mosquitto_passwd(tmp_path, "pw-tool")
    accounts = [
        account_from_row("fast", "pw-fast", "terminal"),
        account_from_row("slow", "pw-slow", "terminal", iterations=20_000),
        account_from_row("tool", imported, "terminal"),
    ]
    assert accounts[2].password_hash == imported
    with MosquittoBroker(tmp_path / "broker", accounts) as broker:
        for user in ("fast", "slow", "tool"):
            with connected(broker, "terminal", user, f"pw-{user}") as client:
                assert client.is_connected
            with broker.client("terminal", user, f"pw-{user}!") as client:
                assert client.connect().is_failure
