"""Mail the web site sends itself (password-reset links).

Alarm notifications never come through here: they go into the notification
ledger and the outbox worker sends them. A reset link is different: it is
only useful for minutes, must not be retried for hours, and must never be
billed, so it is sent at once over SMTP to the server configured for the
notifier (:class:`cloud.notify.settings.NotifySettings`).
``app.extensions["mimamori_mailer"]`` holds a :class:`SmtpMailer` in
production and a :class:`RecordingMailer` in unit tests.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from cloud.notify.settings import NotifySettings
from cloud.services.errors import MailError


class Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> None:
        """Hand one plain-text message to the mail server; :class:`MailError` if refused."""


@dataclass(frozen=True)
class SentMail:
    to: str
    subject: str
    body: str


@dataclass
class RecordingMailer:
    """Keeps messages instead of sending them (unit tests)."""

    sent: list[SentMail] = field(default_factory=list)

    def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append(SentMail(to, subject, body))


class SmtpMailer:
    """Sends with smtplib to the notifier's SMTP server (plain, STARTTLS or SSL)."""

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings

    def message(self, to: str, subject: str, body: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.mail_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.settings.message_id_domain)
        msg.set_content(body, charset="utf-8")
        return msg

    def send(self, to: str, subject: str, body: str) -> None:
        s = self.settings
        msg = self.message(to, subject, body)
        try:
            if s.smtp_security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.smtp_host,
                    s.smtp_port,
                    timeout=s.smtp_timeout_s,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
            with smtp:
                if s.smtp_security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_user:
                    smtp.login(s.smtp_user, s.smtp_password)
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as err:
            raise MailError(f"mail to {to} not accepted: {err}") from err
