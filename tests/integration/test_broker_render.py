"""``python -m cloud.broker``: the rendered directory is what a real mosquitto runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cloud.broker import (
    Account,
    BrokerConfigError,
    BrokerSettings,
    Listener,
    ListenerKind,
    Role,
    accounts_from_rows,
    hash_password,
    render_directory,
)
from cloud.broker.cli import read_accounts
from protocol.topics import uplink
from tests.support.broker import (
    HOST,
    Client,
    current_user,
    free_port,
    launch,
    make_pki,
    require_tool,
    terminate,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "cloud.broker", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_describes_the_commands():
    top = cli("--help")
    assert top.returncode == 0
    assert "render" in top.stdout and "hash" in top.stdout
    render = cli("render", "--help")
    assert render.returncode == 0
    for option in ("--out", "--accounts", "--listener", "--tls-ca", "--data-dir", "--group"):
        assert option in render.stdout


def test_hash_command_prints_a_verifiable_hash():
    from cloud.broker import verify_password

    result = cli("hash", "--iterations", "500", stdin="s3cret\n")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("$7$500$")
    assert verify_password("s3cret", line)


def test_cli_renders_a_directory_mosquitto_runs(tmp_path):
    pki = make_pki(tmp_path / "pki")
    terminal_port, service_port = free_port(), free_port()
    accounts_csv = tmp_path / "accounts.csv"
    accounts_csv.write_text(
        "# username,secret,role\n"
        "T-001,pw-t1,terminal\n"
        f"T-002,{hash_password('pw-t2')},terminal\n"
        "\n"
        "ingest,pw-ingest,ingest\n"
        "web,pw-web,web\n"
    )
    out, data, log = tmp_path / "conf", tmp_path / "data", tmp_path / "broker.log"
    result = cli(
        "render",
        "--out",
        str(out),
        "--accounts",
        str(accounts_csv),
        "--listener",
        f"terminal:{HOST}:{terminal_port}:tls",
        "--listener",
        f"service:{HOST}:{service_port}",
        "--tls-ca",
        str(pki.ca),
        "--tls-cert",
        str(pki.cert),
        "--tls-key",
        str(pki.key),
        "--data-dir",
        str(data),
        "--log-file",
        str(log),
        "--pid-file",
        str(tmp_path / "broker.pid"),
        "--user",
        current_user(),
    )
    assert result.returncode == 0, result.stderr

    seed_file = data / "dynamic-security.json"
    for path in (out / "services.passwd", seed_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    seed = json.loads(seed_file.read_text())
    assert [c["username"] for c in seed["clients"]] == ["T-001", "T-002"]
    assert {"acltype": "publishClientSend", "topic": "mm/v1/T-001/up/#"} in [
        {k: a[k] for k in ("acltype", "topic")}
        for r in seed["roles"]
        if r["rolename"] == "terminal:T-001"
        for a in r["acls"]
    ]
    assert "T-001" not in (out / "services.passwd").read_text()
    assert "user web\n" in (out / "services.acl").read_text()
    assert "mosquitto_dynamic_security.so" in (out / "mosquitto.conf").read_text()

    proc = launch(
        require_tool("mosquitto", "mosquitto"),
        out / "mosquitto.conf",
        log,
        plain=[service_port],
        tls={terminal_port: pki.ca},
    )
    try:
        assert int((tmp_path / "broker.pid").read_text()) == proc.pid
        with (
            Client(HOST, service_port, "ingest", "pw-ingest") as ingest,
            Client(HOST, terminal_port, "T-002", "pw-t2", tls_ca=pki.ca) as t2,
        ):
            ingest.connect_ok().subscribe("$share/ingest/mm/v1/+/up/#")
            t2.connect_ok().publish(uplink("T-002", "data"), b"hello")
            assert ingest.expect().payload == b"hello"
        with Client(HOST, terminal_port, "T-001", "pw-t1", tls_ca=pki.ca) as t1:
            assert not t1.connect().is_failure
    finally:
        terminate(proc)


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("a/b,pw,terminal\n", "bad terminal username"),
        ("+,pw,terminal\n", "bad terminal username"),
        (f"{'x' * 33},pw,terminal\n", "bad terminal username"),
        ("T1,pw,operator\n", "unknown role"),
        ("T1,pw,admin\n", "the admin account is named"),
        ("T1,pw,terminal\nT1,pw2,terminal\n", "duplicate"),
        ("T1,,terminal\n", "empty password"),
        ("T1,pw\n", "line 1"),
        ("svc one,pw,web\n", "bad web username"),
    ],
)
def test_bad_accounts_are_refused_and_nothing_is_written(tmp_path, csv_text, message):
    (tmp_path / "a.csv").write_text(csv_text)
    result = cli(
        "render",
        "--out",
        str(tmp_path / "out"),
        "--accounts",
        str(tmp_path / "a.csv"),
        "--listener",
        "service:127.0.0.1:1999",
        "--data-dir",
        str(tmp_path / "d"),
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listener", "terminal:0.0.0.0:8883:tls"], "needs TLS files"),
        (["--listener", "broker:0.0.0.0:8883"], "listener"),
        (["--listener", "terminal:0.0.0.0:99999"], "port out of range"),
        (["--listener", "service:127.0.0.1:1999", "--tls-ca", "ca.pem"], "go together"),
        (
            ["--listener", "service:127.0.0.1:1999", "--listener", "terminal:127.0.0.1:1999"],
            "same address and port",
        ),
    ],
)
def test_bad_settings_are_refused(tmp_path, args, message):
    (tmp_path / "a.csv").write_text("T1,pw,terminal\n")
    result = cli(
        "render",
        "--out",
        str(tmp_path / "out"),
        "--accounts",
        str(tmp_path / "a.csv"),
        "--data-dir",
        str(tmp_path / "d"),
        *args,
    )
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_paths_with_whitespace_are_refused(tmp_path):
    settings = BrokerSettings(
        listeners=(Listener(ListenerKind.SERVICE, 1999),), data_dir=tmp_path / "my data"
    )
    with pytest.raises(BrokerConfigError, match="whitespace"):
        render_directory(tmp_path / "out", [], settings)


def test_read_accounts_accepts_comments_blank_lines_and_hashes():
    hashed = hash_password("pw")
    accounts = read_accounts(
        f"# comment\n\nT1,pw,terminal\n T2 ,{hashed}, TERMINAL \ningest,pw,ingest\n"
    )
    assert [(a.username, a.role) for a in accounts] == [
        ("T1", Role.TERMINAL),
        ("T2", Role.TERMINAL),
        ("ingest", Role.INGEST),
    ]
    assert accounts[1].password_hash == hashed


def test_only_one_terminal_listener_per_broker(tmp_path):
    with pytest.raises(BrokerConfigError, match="one terminal listener"):
        BrokerSettings(
            listeners=(
                Listener(ListenerKind.TERMINAL, 1999),
                Listener(ListenerKind.TERMINAL, 2000),
            ),
            data_dir=tmp_path,
        )


def test_the_plugin_file_is_seeded_once_and_then_left_to_the_broker(tmp_path):
    settings = BrokerSettings(
        listeners=(Listener(ListenerKind.TERMINAL, 1999),), data_dir=tmp_path / "d"
    )
    files = render_directory(
        tmp_path / "out", accounts_from_rows([("T1", "pw", "terminal")]), settings
    )
    files.dynsec.write_text("{}")  # what the broker made of it since
    render_directory(tmp_path / "out", accounts_from_rows([("T2", "pw", "terminal")]), settings)
    assert files.dynsec.read_text() == "{}"
    render_directory(
        tmp_path / "out", accounts_from_rows([("T2", "pw", "terminal")]), settings, reseed=True
    )
    assert [c["username"] for c in json.loads(files.dynsec.read_text())["clients"]] == ["T2"]


def test_same_name_may_be_a_terminal_and_a_service():
    # Different listeners, different password files: no clash.
    accounts = accounts_from_rows([("web", "a", "terminal"), ("web", "b", "web")])
    assert {a.role for a in accounts} == {Role.TERMINAL, Role.WEB}


def test_account_requires_a_hash():
    with pytest.raises(BrokerConfigError, match="not a mosquitto password hash"):
        Account("T1", "plaintext", Role.TERMINAL)


def test_rendered_files_are_replaced_atomically_with_their_mode(tmp_path):
    settings = BrokerSettings(
        listeners=(Listener(ListenerKind.SERVICE, 1999),), data_dir=tmp_path / "d"
    )
    old_umask = os.umask(0o077)
    try:
        files = render_directory(
            tmp_path / "out", accounts_from_rows([("T1", "pw", "terminal")]), settings
        )
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(files.service_passwd.stat().st_mode) == 0o640
    assert stat.S_IMODE(files.dynsec.stat().st_mode) == 0o640
    assert stat.S_IMODE(files.conf.stat().st_mode) == 0o644
    assert not list(files.directory.glob(".*.tmp"))
