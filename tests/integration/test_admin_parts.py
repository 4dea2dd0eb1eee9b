"""The install's steps one by one, on real tools (psql on a real PostgreSQL,
openssl): rerunnable, and loud about what they cannot do. The whole install
runs in tests/deploy (make test-deploy)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest

from cloud.admin import envfile, postgres, tls, units
from cloud.admin.errors import AdminError
from cloud.admin.install import Options
from tests.support.broker import make_pki
from tests.support.postgres import session_server

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_the_role_and_databases_are_made_once_and_owned_by_the_role(request):
    server = session_server(request.config)
    admin = f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres"
    made = postgres.provision("svc_a", ["svc_a", "svc_a_drill"], "first-pw", admin)
    assert made == ["svc_a owned by svc_a", "svc_a_drill owned by svc_a"]
    # A rerun changes only the password.
    assert postgres.provision("svc_a", ["svc_a", "svc_a_drill"], "second-pw", admin) == made
    with psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=svc_a password=second-pw dbname=svc_a"
    ) as conn:
        super_, createdb = conn.execute(
            "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = 'svc_a'"
        ).fetchone()
    assert (super_, createdb) == (False, False)
    # Somebody else's database is not taken over.
    server.create_database("taken")
    with pytest.raises(AdminError, match="NOT owned by svc_a"):
        postgres.provision("svc_a", ["taken_1"], "second-pw", admin)
    with pytest.raises(AdminError, match="letters, digits"):
        postgres.provision("svc_a", ["x; DROP DATABASE postgres"], "pw", admin)


def test_the_broker_certificate_is_issued_from_the_ca_and_kept_on_rerun(tmp_path):
    pki = make_pki(tmp_path / "pki")
    out = tmp_path / "broker"
    out.mkdir()
    names = ["mqtt.example.test", "localhost", "127.0.0.1"]
    ca_key = pki.ca.with_suffix(".key")
    files, done = tls.install(out, ca=pki.ca, names=names, group="root", ca_key=ca_key)
    assert done == "certificate issued"
    assert oct(files.key.stat().st_mode & 0o777) == "0o640"
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(files.ca), str(files.cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    issued = files.cert.read_text()
    assert tls.install(out, ca=pki.ca, names=names, group="root", ca_key=ca_key)[1] == (
        "certificate kept"
    )
    assert files.cert.read_text() == issued
    # A new name the certificate lacks: issued again.
    more = [*names, "broker.internal"]
    assert tls.install(out, ca=pki.ca, names=more, group="root", ca_key=ca_key)[1] == (
        "certificate issued"
    )
    # A certificate made elsewhere must name every host and last a while.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "s.pem").write_text(files.cert.read_text())
    (elsewhere / "s.key").write_text(files.key.read_text())
    given = {"cert": elsewhere / "s.pem", "key": elsewhere / "s.key"}
    with pytest.raises(AdminError, match=r"does not name other\.example\.test"):
        tls.install(out, ca=pki.ca, names=["other.example.test"], group="root", **given)
    with pytest.raises(AdminError, match="expires within 30 days"):
        tls.install(out, ca=pki.ca, names=names, group="root", cert=pki.cert, key=pki.key)
    with pytest.raises(AdminError, match="not both"):
        tls.install(out, ca=pki.ca, names=names, group="root", ca_key=ca_key, cert=pki.cert,
                    key=pki.key)  # fmt: skip


def test_every_unit_template_fills_in_and_a_stray_placeholder_is_an_error():
    values = {
        name: "/x"
        for name in (
            "APP", "VENV", "ETC", "LOG_DIR", "USER", "GROUP", "BROKER_USER", "BROKER_GROUP",
            "MOSQUITTO", "MQTT_HOST", "TERMINAL_PORT", "SERVICE_PORT", "WEB_BIND", "WEB_WORKERS",
        )
    }  # fmt: skip
    found = units.templates(REPO / "deploy" / "systemd")
    assert {"mimamori-broker.service", "mimamori-web.service", "mimamori-ingest@.service"} <= set(
        found
    )
    for name, template in found.items():
        assert not units.PLACEHOLDER.search(units.render(template, values, name)), name
    with pytest.raises(AdminError, match="unknown placeholder @NOPE@"):
        units.render("ExecStart=@NOPE@", values)
    with pytest.raises(AdminError, match="has blanks"):
        units.render("ExecStart=@APP@", {"APP": "/srv/my app"})


def test_the_environment_file_keeps_what_was_added_by_hand(tmp_path):
    path = tmp_path / "env"
    path.write_text(envfile.render({"MIMAMORI_A": "1"}, {}) + "MIMAMORI_LOCAL=yes\n")
    text = envfile.render({"MIMAMORI_A": "2"}, envfile.read(path))
    path.write_text(text)
    assert envfile.read(path) == {"MIMAMORI_A": "2", "MIMAMORI_LOCAL": "yes"}
    assert envfile.HAND_MARKER in text
    with pytest.raises(AdminError, match="one line"):
        envfile.render({"MIMAMORI_A": "two\nlines"}, {})


def test_install_options_refuse_what_would_collide_or_mislead(tmp_path):
    base = {
        "site_url": "https://monitor.example.test",
        "broker_name": "mqtt.example.test",
        "mail_from": "m@example.test",
        "tls_ca": tmp_path / "ca.pem",
    }
    with pytest.raises(AdminError, match="1883 is Debian's own"):
        Options(**base, service_port=1883)
    with pytest.raises(AdminError, match="--site-url"):
        Options(**{**base, "site_url": "monitor.example.test"})
