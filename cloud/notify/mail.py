"""E-mail: compose a message from a ledger row and send it over SMTP (smtplib).

The Message-ID is derived from the row's dedup key, so every attempt at the
same notification carries the same Message-ID: if a worker crashes after the
server accepted a message but before the ledger recorded it, the retry is a
duplicate an MTA or mail client can recognise and drop. Mails about one
alarm share a ``References`` root, so mail clients thread raised, reminder
and recovery together.

Error classes (see :mod:`cloud.notify.errors`): SMTP 5xx replies are
permanent (unknown mailbox, rejected content); 4xx replies, refused or
dropped connections, timeouts and authentication failures (a site
configuration problem someone can fix) are transient. Connecting and handing
over one message end within ``smtp_timeout_s`` in total (:mod:`cloud.notify.netio`).
"""

from __future__ import annotations

import hashlib
import smtplib
import socket
import ssl
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.notify import netio
from cloud.notify.errors import (
    PermanentDeliveryError,
    TransientDeliveryError,
    UnreachableError,
)
from cloud.notify.netio import Deadline
from cloud.notify.render import DEFAULT_ZONE, render
from cloud.notify.settings import NotifySettings

Attachment = tuple[str, str, bytes]  # file name, MIME type, content


def message_id(dedup_key: str, domain: str) -> str:
    """``<hex@domain>``: stable for one ledger row, unique across rows."""
    digest = hashlib.sha256(dedup_key.encode("utf-8")).hexdigest()[:40]
    return f"<{digest}@{domain}>"


def compose(
    *,
    dedup_key: str,
    recipient: str,
    payload: dict[str, Any],
    language: str,
    settings: NotifySettings,
    now: datetime,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """The message for one ledger row, with ``attachments`` (file name, MIME
    type, bytes). Raises :class:`cloud.notify.errors.RenderError` if the
    payload cannot be rendered."""
    subject, body = render(payload, language, settings.site_url)
    try:
        zone = ZoneInfo(str(payload.get("timezone") or DEFAULT_ZONE))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(DEFAULT_ZONE)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = settings.mail_from
    msg["To"] = recipient
    msg["Date"] = format_datetime(now.astimezone(zone))
    msg["Message-ID"] = message_id(dedup_key, settings.message_id_domain)
    alarm_id = payload.get("alarm_id")
    if alarm_id is not None:
        root = f"<alarm-{alarm_id}-{payload.get('terminal_id', '')}@{settings.message_id_domain}>"
        msg["References"] = root
        msg["In-Reply-To"] = root
    # Auto-generated mail: vacation responders must not answer it (RFC 3834).
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Mimamori-Event"] = str(payload.get("event") or payload.get("kind") or "")
    msg.set_content(body, charset="utf-8")
    for name, mime, data in attachments:
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


class SmtpMailer:
    """Sends messages over one SMTP connection, opened on first use and
    reopened after any error. Use as a context manager around a batch."""

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        # One deadline per message, restarted by send(): connecting (when
        # needed) and handing over the message end within smtp_timeout_s.
        self._deadline = Deadline(settings.smtp_timeout_s)

    def __enter__(self) -> SmtpMailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, msg: EmailMessage, recipient: str) -> None:
        """Hand ``msg`` to the server for ``recipient`` only.

        Raises :class:`TransientDeliveryError` or :class:`PermanentDeliveryError`.
        """
        self._deadline.restart()
        try:
            smtp = self._connect()
        except (smtplib.SMTPException, OSError, ssl.SSLError) as err:
            self.close()
            raise UnreachableError(
                f"SMTP {self.settings.smtp_host}:{self.settings.smtp_port}: "
                f"{type(err).__name__}: {err}"
            ) from err
        try:
            refused = smtp.send_message(
                msg, from_addr=self.settings.mail_from, to_addrs=[recipient]
            )
        except smtplib.SMTPRecipientsRefused as err:
            self._drop_after_error()
            codes = [code for code, _text in err.recipients.values()]
            raise _by_code(min(codes, default=451), f"recipient refused: {err.recipients}") from err
        except smtplib.SMTPResponseException as err:
            self._drop_after_error()
            raise _by_code(err.smtp_code, f"SMTP {err.smtp_code} {_text(err.smtp_error)}") from err
        except (smtplib.SMTPException, OSError, ssl.SSLError) as err:
            self.close()
            raise TransientDeliveryError(f"SMTP: {type(err).__name__}: {err}") from err
        if refused:  # only possible with several recipients; kept for safety
            raise TransientDeliveryError(f"recipient refused: {refused}")

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _drop_after_error(self) -> None:
        # After a refusal the session may be mid-transaction: reset it, or
        # reconnect next time if even that fails.
        if self._smtp is None:
            return
        try:
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def _connect(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        s = self.settings
        kind = _SMTPS if s.smtp_security == "ssl" else _SMTP
        smtp = kind(s.smtp_host, s.smtp_port, self._deadline, local_hostname=_local_name())
        try:
            if s.smtp_security == "starttls":
                smtp.starttls(context=netio.tls_context())
                smtp.keep_deadline()
            if s.smtp_user:
                # A refused login is a site configuration problem someone can
                # fix: it surfaces as unreachable (retried), not as dead mail.
                smtp.login(s.smtp_user, s.smtp_password)
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return smtp


class _SMTP(smtplib.SMTP):
    """smtplib's client on a socket that keeps the mailer's deadline."""

    def __init__(self, host: str, port: int, deadline: Deadline, *, local_hostname: str) -> None:
        self._deadline = deadline
        self._server_name = host  # for the certificate check
        super().__init__(host, port, local_hostname=local_hostname, timeout=deadline.seconds)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return netio.open_connection(host, port, self._deadline)

    def keep_deadline(self) -> None:
        """After STARTTLS: the TLS socket keeps the deadline too."""
        if isinstance(self.sock, netio.DeadlineSSLSocket):
            self.sock._deadline = self._deadline


class _SMTPS(_SMTP):
    """SMTP over TLS from the first byte (port 465)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = super()._get_socket(host, port, timeout)
        return netio.wrap_tls(netio.tls_context(), raw, self._server_name)


def _by_code(code: int, message: str) -> TransientDeliveryError | PermanentDeliveryError:
    if 500 <= code < 600:
        return PermanentDeliveryError(message)
    return TransientDeliveryError(message)


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _local_name() -> str:
    # smtplib would otherwise resolve the FQDN, which can hang on a host
    # without DNS; the HELO name does not need to resolve.
    return socket.gethostname() or "localhost"
