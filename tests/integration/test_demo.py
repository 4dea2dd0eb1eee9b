"""``python -m cloud.demo`` end to end, and its SMTP sink, chat receiver and SFTP server.

The demo test runs the real launcher as ``make demo`` does (Mosquitto,
ingest, notify, scheduler, web, SMTP sink, 20 virtual terminals and 2
virtual MicroPython boards), waits for the scenario's leakage warning and
alarm mail in the sink, for the alarm in the chat receiver (the seeded chat
target, Apprise's ntfy plugin), for this hour's CSV file on the demo's SFTP
server (queued as the scheduler would after the hour, delivered by the
demo's own worker), for the excursion in the time-series store and for
the leakage alarm of the first board (a MicroPython terminal in the scenario's
leaky group), then presses Ctrl-C (SIGINT) and checks that the
launcher exits 0 and that no process of the run is left: every process the
launcher starts carries ``MIMAMORI_DEMO_RUN=<token>`` in its environment,
and ``/proc`` is scanned for it.
"""

from __future__ import annotations

import email.message
import http.cookiejar
import json
import os
import re
import secrets
import signal
import smtplib
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.config import Settings
from cloud.demo import chatsink
from cloud.demo.mailsink import MailSink
from cloud.demo.procs import RUN_ENV
from cloud.models import Delivery, DeliveryStatus, ForwardingEndpoint, utcnow
from cloud.notify import chat as chat_client
from cloud.notify import files, sftp
from cloud.notify.errors import UnreachableError
from cloud.services.mailsink import list_messages
from cloud.timeseries import make_store

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE = 120.0
# The issue: warning and alarm within two minutes of the start; a little slack for slow CI.
SCENARIO_DEADLINE = 180.0
STOP_DEADLINE = 90.0
BOARD = "DEMO0021"  # the first virtual board: in the scenario's leaky group
BOARD_DEADLINE = 270.0  # boards start after the fleet (bundle build, flashing)


def run_processes(token: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment has the run mark."""
    mark = f"{RUN_ENV}={token}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or not ours to read
        if state != "Z":  # a zombie has exited; its parent just has not reaped it yet
            found[int(entry.name)] = cmdline.strip()
    return found


def wait_for(
    predicate: Callable[[], Any],
    deadline: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> Any:
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise AssertionError(f"launcher exited ({proc.returncode}) before {what}:\n{text}")
        if time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-4000:] if log else ""
            raise AssertionError(f"timed out waiting for {what}\n{text}")
        time.sleep(0.5)


def demo_logs(data: Path) -> str:
    out = []
    for path in sorted((data / "logs").glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-15:]
        out.append(f"--- {path.name}\n" + "\n".join(lines))
    return "\n".join(out)


@pytest.mark.timeout(420)  # the boards' bundle build and flashing come before their alarm
def test_demo_raises_alarms_mails_them_and_stops_without_orphans(tmp_path: Path) -> None:
    token = secrets.token_hex(8)
    data = tmp_path / "demo"
    log = tmp_path / "launcher.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMAMORI_")}
    env[RUN_ENV] = token
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud.demo",
                "--port",
                "0",
                "--terminals",
                "20",
                "--boards",
                "2",
                "--data-dir",
                str(data),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "Ctrl-C stops everything" in log.read_text(errors="replace"),
            started + START_DEADLINE,
            "the banner",
            proc,
            log,
        )
        banner = log.read_text(errors="replace")
        creds = json.loads((data / "credentials.json").read_text())
        assert oct((data / "credentials.json").stat().st_mode & 0o777) == "0o600"
        for who in ("customer", "operator"):
            assert f"{creds[who]['email']}  password {creds[who]['password']}" in banner
        url = re.search(r"web site:\s+(http://\S+)", banner)
        assert url is not None, banner
        assert url.group(1) == creds["url"]
        with urllib.request.urlopen(url.group(1) + "healthz", timeout=10) as resp:
            assert resp.status == 200

        # Mail: a leakage warning reaches the warning-level target, the alarm
        # the alarm-level one as well (whichever terminals the scenario picks).
        def mails() -> Any:
            got = list_messages(data / "mail")
            warning = [
                m
                for m in got
                if "facility@customer.example" in m.rcpt_to
                and "【注意】" in m.subject
                and "漏洩電流" in m.subject
            ]
            alarm = [
                m
                for m in got
                if "manager@customer.example" in m.rcpt_to and "漏洩電流" in m.subject
            ]
            return (warning, alarm) if warning and alarm else None

        try:
            warning, alarm = wait_for(
                mails, started + SCENARIO_DEADLINE, "warning and alarm mail in the sink", proc
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{demo_logs(data)}") from None
        assert "しきい値" in warning[0].text, warning[0].text
        # "第3電気室 (DEMO0003) 絶縁 Ior (leak.ior) 漏洩電流": the demo's channel names.
        about = re.search(r"\((\S+)\) 絶縁 Ior \((\S+)\) 漏洩電流", alarm[0].subject)
        level = re.search(r"しきい値\s*:\s*([0-9.]+) mA", alarm[0].text)
        assert about is not None and level is not None, alarm[0]
        tid, channel = about.groups()
        assert tid in creds["terminals"]

        # Chat: the same alarm reaches the chat target (Apprise, ntfy) in the
        # demo's receiver, whose page the banner names.
        def chats() -> Any:
            got = chatsink.list_messages(data / "chat")
            return [m for m in got if m["topic"] == "demo-alarms" and "漏洩電流" in m["title"]]

        said = wait_for(chats, time.monotonic() + 60, "an alarm in the chat receiver", proc)
        assert "しきい値" in said[0]["message"], said[0]
        page = re.search(r"chat:\s+(http://\S+)", banner)
        assert page is not None, banner
        with urllib.request.urlopen(page.group(1), timeout=10) as resp:
            assert said[0]["title"] in resp.read().decode()

        # Graph data: the excursion past the alarm level is in the store, and
        # every terminal of the fleet has reported.
        engine = db.make_engine(f"sqlite:///{data / 'mimamori.sqlite3'}")
        try:
            store = make_store(Settings(database_url=str(engine.url)), engine)
            now = datetime.now(UTC)
            leak = store.query(tid, channel, now - timedelta(hours=1), now + timedelta(minutes=1))
            assert leak.raw and max(p.value for p in leak.points) >= float(level.group(1))
            reporting = {terminal for terminal, _ in store.series()}
            assert set(creds["terminals"]) <= reporting  # the boards too

            # Files: the hourly CSV of this hour would be queued ten minutes
            # after the hour; queue it now as the scheduler's job then does
            # (its clock moved to then, the rows due now), and the demo's
            # delivery worker uploads it to the demo's SFTP server.
            with db.session_factory(engine)() as session:
                ep = session.scalars(sa.select(ForwardingEndpoint)).one()
                assert ep.kind == "sftp" and ep.host_key and ep.file_period == "hourly"
                start = files.period_start(ep, now)
                end = files.period_end(ep, start)
                grace = timedelta(minutes=10)
                assert files.queue_due(session, end + grace, grace) >= 1
                queued = session.scalars(
                    sa.select(Delivery).where(
                        Delivery.dedup_key.like(f"file:{ep.id}:%"),
                        Delivery.status == DeliveryStatus.QUEUED,
                    )
                ).all()
                for row in queued:
                    row.next_attempt_at = utcnow()
                session.commit()
                name = files.file_name(ep, f"C{ep.customer_id}", start)
            landing = re.search(r"CSV files:\s+(\S+)", banner)
            assert landing is not None and Path(landing.group(1)) == data / "sftp" / "incoming"
            csv_file = Path(landing.group(1)) / name
            text = wait_for(
                lambda: csv_file.exists() and csv_file.read_bytes().decode("utf-8"),
                time.monotonic() + 60,
                f"{name} on the SFTP server",
                proc,
            )
            assert text.startswith("time,terminal,terminal_name,channel,name,value,unit,state\r\n")
            assert f",{tid}," in text and f",{channel},絶縁 Ior," in text

            # the boards run the board build on MicroPython, and their alarms reach the cloud
            def board_alarm() -> Any:
                with engine.connect() as conn:
                    rows = conn.execute(sa.text("SELECT id, firmware_version FROM terminals"))
                    fw = {tid: v or "" for tid, v in rows}
                    leak = conn.execute(
                        sa.text(
                            "SELECT count(*) FROM alarms WHERE terminal_id = :t AND cond = 'leak'"
                        ),
                        {"t": BOARD},
                    ).scalar()
                return fw if leak else None

            fw = wait_for(
                board_alarm, started + BOARD_DEADLINE, "the first board's leak alarm", proc
            )
            assert [t for t, v in fw.items() if v.split()[1] == "micropython"] == [
                BOARD,
                "DEMO0022",
            ]

            # the operator updates both boards from the web site and sees them confirm
            archive = data / "ota" / "mimamori-update.tar"
            assert str(archive) in banner
            site = Site(url.group(1))
            assert site.login(creds["operator"]["email"], creds["operator"]["password"]).endswith(
                "/login/code"
            )
            # operators log in with two factors: the banner's command gives the code
            assert "python -m cloud.demo.totp" in banner
            code = subprocess.run(
                [sys.executable, "-m", "cloud.demo.totp", "--data-dir", str(data)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.split()[0]
            landed = site.post("login/code", "login/code", fields={"code": code})
            assert "/login" not in landed, landed
            site.post("ota/bundles", "ota", files={"archive": archive.read_bytes()})
            bundle = re.search(
                r'<select name="bundle" required><option value="(\d+)"', site.get("ota")
            )
            assert bundle is not None
            page_url = site.post(
                "ota/rollouts",
                "ota",
                fields={
                    "bundle": bundle.group(1),
                    "terminals": f"{BOARD} DEMO0022",
                    "waves": "1,100%",
                },
            )

            def confirmed() -> Any:
                page = site.get(page_url)
                return page if page.count('class="ota-confirmed"') == 2 else None

            try:
                wait_for(confirmed, time.monotonic() + 120, "both boards to confirm the update")
            except AssertionError as err:
                raise AssertionError(f"{err}\n{site.get(page_url)[-3000:]}") from None
        finally:
            engine.dispose()

        running = run_processes(token)
        names = " ".join(running.values())
        for part in (
            "cloud.demo",
            "mosquitto",
            "cloud.demo.mailsink",
            "cloud.ingest",
            "cloud.notify",
            "cloud.ops.scheduler",
            "cloud.app",
            "firmware_sim fleet",
            "firmware_sim boards",
            "virtual_board.mjs",
        ):
            assert part in names, f"{part} not running: {running}"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(STOP_DEADLINE) == 0, log.read_text(errors="replace")[-3000:]
        left = wait_for(
            lambda: not run_processes(token) or None,
            time.monotonic() + 10,
            "every process of the run to exit",
        )
        assert left
        assert "stopped broker (0)" in log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in run_processes(token):
            os.kill(pid, signal.SIGKILL)


class Site:
    """A browser's exchange with the web site: cookies, forms with their CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        with self.opener.open(urllib.parse.urljoin(self.base, path), timeout=30) as resp:
            text: str = resp.read().decode()
            return text

    def post(
        self,
        path: str,
        form_page: str,
        fields: dict[str, str] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> str:
        """Submit a form of ``form_page``; the URL it ends on (after redirects)."""
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', self.get(form_page))
        assert token is not None
        values = {"csrf_token": token.group(1), **(fields or {})}
        if files:
            boundary = secrets.token_hex(16)
            disposition = "--%s\r\nContent-Disposition: form-data; name=%s"
            parts = [
                (disposition % (boundary, f'"{k}"') + f"\r\n\r\n{v}\r\n").encode()
                for k, v in values.items()
            ]
            for name, data in files.items():
                head = (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                    f'filename="{name}.tar"\r\nContent-Type: application/x-tar\r\n\r\n'
                )
                parts.append(head.encode() + data + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            ctype = f"multipart/form-data; boundary={boundary}"
        else:
            body = urllib.parse.urlencode(values).encode()
            ctype = "application/x-www-form-urlencoded"
        req = urllib.request.Request(
            urllib.parse.urljoin(self.base, path), data=body, headers={"Content-Type": ctype}
        )
        with self.opener.open(req, timeout=60) as resp:
            assert resp.status == 200, resp.status
            final: str = resp.geturl()
            return final

    def login(self, email: str, password: str) -> str:
        """Log in with the password; the URL it ends on (the code page for
        users with two factors, else a page of the site)."""
        landed = self.post("login", "login", fields={"email": email, "password": password})
        assert landed.endswith("/login/code") or "/login" not in landed, landed
        return landed


def test_launcher_refuses_a_foreign_data_dir(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not the demo's")
    result = subprocess.run(
        [sys.executable, "-m", "cloud.demo", "--port", "0", "--data-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "not made by the demo" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "not the demo's"


@pytest.fixture
def sink(tmp_path: Path) -> Any:
    with MailSink(tmp_path / "mail") as s:
        yield s


def test_mailsink_keeps_messages_for_the_operator_area(sink: MailSink, tmp_path: Path) -> None:
    for n, subject in enumerate(("【警報】発生: 第1電気室", "recovered")):
        msg = email.message.EmailMessage()
        msg["From"] = "mimamori@localhost.localdomain"
        msg["To"] = "facility@customer.example"
        msg["Subject"] = subject
        msg.set_content(f"本文 {n}\n漏洩電流 62.0 mA")
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            refused = smtp.send_message(
                msg, to_addrs=["facility@customer.example", "manager@customer.example"]
            )
        assert refused == {}
    got = list_messages(tmp_path / "mail")
    assert [m.subject for m in got] == ["recovered", "【警報】発生: 第1電気室"]  # newest first
    first = got[1]
    assert first.mail_from == "mimamori@localhost.localdomain"
    assert first.rcpt_to == ("facility@customer.example", "manager@customer.example")
    assert "漏洩電流 62.0 mA" in first.text
    assert first.received_at <= datetime.now(UTC)
    assert list_messages(tmp_path / "mail", limit=1)[0].subject == "recovered"
    assert list_messages(tmp_path / "nowhere") == []


def test_chatsink_keeps_what_apprise_posts_and_shows_it(tmp_path: Path) -> None:
    with chatsink.ChatSink(tmp_path / "chat") as sink:
        # Apprise's own ntfy plugin, as the delivery worker sends (no guard: a test).
        chat_client.send(
            f"ntfy://127.0.0.1:{sink.port}/demo-alarms",
            "【警報】発生: 第1電気室 <b>",
            "漏洩電流 62.0 mA",
            timeout_s=10,
            guard=None,
        )
        req = urllib.request.Request(sink.url + "raw", data=b"not json", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["topic"] == "raw"
        with urllib.request.urlopen(sink.url, timeout=10) as resp:
            page = resp.read().decode()
    raw, first = chatsink.list_messages(tmp_path / "chat")  # newest first
    assert (first["topic"], first["title"], first["message"]) == (
        "demo-alarms",
        "【警報】発生: 第1電気室 <b>",
        "漏洩電流 62.0 mA",
    )
    assert (raw["topic"], raw["message"]) == ("raw", "not json")
    assert "第1電気室 &lt;b&gt;" in page and "第1電気室 <b>" not in page
    assert chatsink.list_messages(tmp_path / "nowhere") == []


def test_sftpsink_takes_files_from_the_forwarder_with_its_key_only(tmp_path: Path) -> None:
    private, public = sftp.new_key("demo")
    stranger, _ = sftp.new_key("stranger")
    keys = tmp_path / "authorized_keys"
    keys.write_text(public + "\n")
    (tmp_path / "root" / "incoming").mkdir(parents=True)
    log = tmp_path / "sftpsink.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud.demo.sftpsink", "--root", str(tmp_path / "root"),
             "--host-key", str(tmp_path / "host.key"), "--authorized-keys", str(keys)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: "ready" in log.read_text(), time.monotonic() + 30, "ready", proc, log)
        text = log.read_text()
        port = re.search(r"^sftp 127\.0\.0\.1:(\d+)$", text, re.MULTILINE)
        key = re.search(r"^host-key (ssh-ed25519 \S+)$", text, re.MULTILINE)
        assert port is not None and key is not None, text
        assert "Warning" not in text  # no library noise in the demo's log
        assert oct((tmp_path / "host.key").stat().st_mode & 0o777) == "0o600"
        host_key = sftp.parse_host_key(key.group(1))

        def put(user: str, secret: str, name: str) -> bool:
            dest = sftp.parse_url(f"sftp://{user}@127.0.0.1:{port.group(1)}/incoming")
            return sftp.upload(dest, host_key, secret, name, b"a,b\r\n", timeout_s=10, guard=None)

        assert put("demo", private, "x.csv") is True
        assert put("demo", private, "x.csv") is False  # once per name
        for user, secret in (("demo", stranger), ("root", private)):
            with pytest.raises(UnreachableError, match="refused the endpoint's key"):
                put(user, secret, "y.csv")
        assert sorted(p.name for p in (tmp_path / "root" / "incoming").iterdir()) == ["x.csv"]
        assert (tmp_path / "root" / "incoming" / "x.csv").read_bytes() == b"a,b\r\n"
        assert f"file {tmp_path / 'root' / 'incoming' / 'x.csv'} (5 bytes)" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
