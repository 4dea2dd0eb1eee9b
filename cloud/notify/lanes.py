"""Delivery lanes: claimed ledger rows are sent in parallel, one lane per destination.

A lane is one destination: ``"smtp"`` (the site's mail relay, one connection
kept open), one webhook URL or one chat address (:mod:`cloud.notify.chat`).
Each lane has its own thread and database
session and sends its rows one after another; lanes run side by side. So a
webhook endpoint that answers slowly, or trickles its answer until the
deadline (:mod:`cloud.notify.netio`), holds only its own lane: alarm mail and
other customers' webhooks go on.

Limits, so that one customer cannot take every lane: at most
``webhook_concurrency`` webhook and chat lanes at once, and at most
``webhook_per_customer`` of them for one customer. :meth:`Lanes.busy` tells
the claim which rows not to take now (destinations already in a lane,
customers at their limit, all webhooks when the lanes are full);
:meth:`Lanes.submit` refuses rows over a limit, and the caller hands those
back unsent (:func:`release`). The mail lane queues at most ``mail_queue``
rows; more mail waits in the ledger.

Outcomes are written with the lease token (see :mod:`cloud.notify.outbox`):
a lane whose lease passed to another worker records nothing.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from cloud.models import (
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    ForwardingEndpoint,
    NotificationTarget,
)
from cloud.notify import attachments, chat, files, mail, sftp, webhook
from cloud.notify.errors import (
    DeliveryError,
    NotifyError,
    RenderError,
    TransientDeliveryError,
    UnreachableError,
)
from cloud.notify.netguard import AddressPolicy
from cloud.notify.render import render
from cloud.notify.settings import NotifySettings, RetryPolicy
from cloud.timeseries import TimeSeriesStore

log = logging.getLogger("cloud.notify.outbox")

OPEN = (DeliveryStatus.QUEUED, DeliveryStatus.FAILED)
MAIL_LANE = "smtp"
# Order of sending among due rows: alarm state changes, reminders and service
# failure notices first, then forwarded data, then what can wait (digests of
# historical alarms, maintenance announcements, test messages).
_LATER = {"forward": 1, "digest": 2, "maintenance": 2, "test": 2}


def priority(event: str) -> int:
    """0 is sent first; see :data:`_LATER`."""
    return _LATER.get(event, 0)


def priority_sql() -> Any:
    """:func:`priority` as an SQL expression over the ledger's ``event``."""
    return sa.case(*((Delivery.event == event, rank) for event, rank in _LATER.items()), else_=0)


@dataclass(frozen=True)
class Claimed:
    """A row this worker holds the lease of; ``token`` is the claimed ``attempts``."""

    id: int
    token: int
    channel: DeliveryChannel
    recipient: str
    customer_id: int | None
    priority: int = 0
    claimed_at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def lane(self) -> str:
        return MAIL_LANE if self.channel == DeliveryChannel.EMAIL else self.recipient


@dataclass(frozen=True)
class Busy:
    """Rows a claim must leave alone because no lane can take them now."""

    destinations: frozenset[str] = frozenset()  # webhook URLs with a lane
    customers: frozenset[int] = frozenset()  # customers at their webhook lane limit
    webhooks_full: bool = False
    mail_full: bool = False


@dataclass
class RunStats:
    """What a pass did (lanes add to it from their threads)."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0  # outcome not recorded: the lease had passed to another worker
    released: int = 0  # claimed but handed back unsent (no lane or no time for it)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, what: str, error: str | None = None) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)
            if error is not None:
                self.errors.append(error)


def release(session: Session, row_id: int, token: int, now: datetime) -> None:
    """Hand a claimed, unsent row back at once, its attempt uncounted; commit."""
    session.execute(
        sa.update(Delivery)
        .where(Delivery.id == row_id, Delivery.attempts == token, Delivery.status.in_(OPEN))
        .values(attempts=token - 1, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def record(
    session: Session,
    row_id: int,
    token: int,
    now: datetime,
    *,
    error: str | None = None,
    dead: bool = False,
    retry_in: timedelta | None = None,
) -> bool:
    """Write an outcome if the lease is still ours; commit. False: it was not
    (another worker claimed the row since), nothing written."""
    values: dict[str, Any]
    if error is None:
        values = {"status": DeliveryStatus.SENT, "sent_at": now, "next_attempt_at": None}
        values["last_error"] = None
    elif dead or retry_in is None:
        values = {"status": DeliveryStatus.DEAD, "next_attempt_at": None}
        values["last_error"] = error[:2000]
    else:
        values = {"status": DeliveryStatus.FAILED, "next_attempt_at": now + retry_in}
        values["last_error"] = error[:2000]
    result = session.execute(
        sa.update(Delivery)
        .where(Delivery.id == row_id, Delivery.attempts == token, Delivery.status.in_(OPEN))
        .values(**values)
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    recorded = result.first() is not None
    session.commit()
    return recorded


class Lanes:
    """The lanes of one worker. Thread-safe; :meth:`submit` starts lane threads.

    ``clock`` gives the time written into outcomes (``sent_at``, the next
    attempt); ``on_idle`` is called whenever a lane ends, so a dispatcher
    waiting for room can claim again.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: NotifySettings,
        policy: RetryPolicy,
        stats: RunStats,
        *,
        clock: Callable[[], datetime],
        on_idle: Callable[[], None] = lambda: None,
        mail_queue: int = 50,
        store: TimeSeriesStore | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store  # forwarded CSV files are built from it
        self.settings = settings
        self.policy = policy
        self.stats = stats
        self.clock = clock
        self.on_idle = on_idle
        self.mail_queue = mail_queue
        self.addresses = AddressPolicy(settings.webhook_allow)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: dict[str, _Lane] = {}
        self._stopping = False

    def busy(self) -> Busy:
        with self._lock:
            hooks = [lane for key, lane in self._lanes.items() if key != MAIL_LANE]
            per_customer: dict[int, int] = {}
            for lane in hooks:
                if lane.customer_id is not None:
                    per_customer[lane.customer_id] = per_customer.get(lane.customer_id, 0) + 1
            mail = self._lanes.get(MAIL_LANE)
            return Busy(
                destinations=frozenset(lane.key for lane in hooks),
                customers=frozenset(
                    c for c, n in per_customer.items() if n >= self.settings.webhook_per_customer
                ),
                webhooks_full=len(hooks) >= self.settings.webhook_concurrency,
                mail_full=mail is not None and len(mail.queue) >= self.mail_queue,
            )

    def submit(self, rows: list[Claimed]) -> list[Claimed]:
        """Queue ``rows`` on their lanes; return those no lane may take now."""
        refused = []
        with self._lock:
            for row in rows:
                lane = self._lanes.get(row.lane)
                if lane is None:
                    if self._stopping or not self._room_for(row):
                        refused.append(row)
                        continue
                    lane = _Lane(self, row.lane, row.customer_id)
                    self._lanes[row.lane] = lane
                    lane.start()
                heapq.heappush(lane.queue, (row.priority, row.id, row))
        return refused

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every lane has ended; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._lanes:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self) -> None:
        """Finish the sends in progress; hand queued rows back unsent."""
        with self._lock:
            self._stopping = True

    def _room_for(self, row: Claimed) -> bool:
        if row.channel == DeliveryChannel.EMAIL:
            return True
        hooks = [lane for key, lane in self._lanes.items() if key != MAIL_LANE]
        if len(hooks) >= self.settings.webhook_concurrency:
            return False
        mine = sum(1 for lane in hooks if lane.customer_id == row.customer_id)
        return row.customer_id is None or mine < self.settings.webhook_per_customer

    def _next(self, lane: _Lane) -> tuple[Claimed | None, bool]:
        """The lane's next row and whether to send it (False: hand it back);
        (None, _) ends the lane."""
        with self._lock:
            if not lane.queue:
                del self._lanes[lane.key]
                self._idle.notify_all()
                return None, False
            *_, row = heapq.heappop(lane.queue)
            return row, not self._stopping


@dataclass(frozen=True)
class _Job:
    """What a send needs from a row, read before the transaction ends."""

    id: int
    dedup_key: str
    channel: DeliveryChannel
    recipient: str
    language: str
    payload: dict[str, Any]
    target_id: int | None


class _Dead(DeliveryError):
    permanent = True


class _Lane:
    """One destination's rows, sent in order by one thread."""

    def __init__(self, lanes: Lanes, key: str, customer_id: int | None) -> None:
        self.lanes = lanes
        self.key = key
        self.customer_id = customer_id
        self.queue: list[tuple[int, int, Claimed]] = []
        # Set when the destination could not be reached: the lane's other
        # rows are deferred at once instead of each waiting out its deadline.
        self.down: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"lane {self.key[:40]}", daemon=True).start()

    def _run(self) -> None:
        lanes = self.lanes
        mailer = mail.SmtpMailer(lanes.settings) if self.key == MAIL_LANE else None
        try:
            with lanes.sessions() as session:
                while True:
                    row, send = lanes._next(self)
                    if row is None:
                        break
                    # Stop well before the lease runs out, so that no row is
                    # still being worked on here when another worker may claim it.
                    if not send or time.monotonic() > row.claimed_at + lanes.policy.lease_s / 2:
                        release(session, row.id, row.token, lanes.clock())
                        lanes.stats.count("released")
                        continue
                    try:
                        self._deliver(session, mailer, row)
                    except Exception:  # a bug must not kill the lane with rows queued
                        session.rollback()
                        log.exception("delivery %s: unexpected error", row.id)
        finally:
            if mailer is not None:
                mailer.close()
            lanes.on_idle()

    def _deliver(self, session: Session, mailer: mail.SmtpMailer | None, claimed: Claimed) -> None:
        lanes, token = self.lanes, claimed.token
        row = session.get(Delivery, claimed.id, populate_existing=True)
        if row is None:
            return
        job = _Job(
            row.id,
            row.dedup_key,
            DeliveryChannel(row.channel),
            row.recipient,
            row.language,
            dict(row.payload or {}),
            row.target_id,
        )
        session.commit()  # end the read transaction before any network I/O
        if token > lanes.policy.max_attempts:
            # Claimed this often without an outcome: the worker dies on this row.
            self._finish(session, job.id, token, f"no outcome after {token - 1} claims", dead=True)
            return
        forwarded = job.payload.get("kind") in ("senml", "csv")
        endpoint_id = job.payload.get("endpoint_id") if forwarded else None
        status: int | None = None
        try:
            if self.down is not None:
                raise UnreachableError(f"{self.down} (not retried in this batch)")
            if mailer is not None:
                attached = attachments.for_payload(session, job.payload)
                session.commit()  # the files are read; no transaction while sending
                msg = mail.compose(
                    dedup_key=job.dedup_key,
                    recipient=job.recipient,
                    payload=job.payload,
                    language=job.language,
                    settings=lanes.settings,
                    now=lanes.clock(),
                    attachments=attached,
                )
                mailer.send(msg, job.recipient)
            elif job.channel == DeliveryChannel.CHAT:
                title, body = render(job.payload, job.language, lanes.settings.site_url)
                guard = lanes.addresses.guard
                chat.send(
                    job.recipient,
                    title,
                    body,
                    timeout_s=lanes.settings.webhook_timeout_s,
                    guard=guard,
                )
            elif job.payload.get("kind") == "csv":
                self._upload(session, job)
            else:
                status = self._post(session, job)
        except RenderError as err:
            self._finish(session, job.id, token, f"render: {err}", dead=True)
            return
        except DeliveryError as err:
            if isinstance(err, UnreachableError) and self.down is None:
                self.down = str(err)
            if endpoint_id is not None:
                status = webhook.status_of(err)
                self._record_endpoint(session, int(endpoint_id), status, str(err), ok=False)
            retry_in = None if err.permanent else lanes.policy.delay(token)
            self._finish(session, job.id, token, str(err), dead=retry_in is None, retry_in=retry_in)
            return
        except NotifyError as err:
            self._finish(session, job.id, token, str(err), dead=True)
            return
        if endpoint_id is not None:
            self._record_endpoint(session, int(endpoint_id), status, None, ok=True)
        self._finish(session, job.id, token, None)

    def _upload(self, session: Session, job: _Job) -> None:
        """Build a forwarded CSV file and upload it by SFTP (:mod:`cloud.notify.files`)."""
        lanes = self.lanes
        if lanes.store is None:
            raise TransientDeliveryError("this worker has no time-series store")
        endpoint = session.get(ForwardingEndpoint, int(job.payload["endpoint_id"]))
        if endpoint is None or not endpoint.enabled or endpoint.kind != "sftp":
            session.commit()
            raise _Dead("forwarding endpoint deleted, disabled or no longer SFTP")
        if not endpoint.host_key or not endpoint.ssh_key:
            session.commit()
            raise _Dead("forwarding endpoint has no host key or no SSH key")
        p = job.payload
        data = files.build_csv(
            session,
            lanes.store,
            endpoint,
            terminal_ids=list(p["terminals"]),
            start=datetime.fromisoformat(p["start"]),
            end=datetime.fromisoformat(p["end"]),
        )
        dest, host_key, key = sftp.parse_url(endpoint.url), endpoint.host_key, endpoint.ssh_key
        session.commit()
        timeout_s = max(lanes.settings.webhook_timeout_s, lanes.settings.file_timeout_s)
        sftp.upload(
            dest,
            host_key,
            key,
            str(p["name"]),
            data,
            timeout_s=timeout_s,
            guard=lanes.addresses.guard,
        )

    def _post(self, session: Session, job: _Job) -> int:
        """POST a webhook row, signed: SenML for forwarding (the endpoint's
        secret), the event JSON for alarm targets (the target's secret).
        Raises :class:`DeliveryError`."""
        settings = self.lanes.settings
        # The signed timestamp is the real send time, whatever clock the
        # caller passed, so receivers can hold it against their own clock.
        ts = int(time.time())
        headers = {
            webhook.TIMESTAMP_HEADER: str(ts),
            webhook.DELIVERY_HEADER: mail.message_id(job.dedup_key, settings.message_id_domain)[
                1:-1
            ],
            webhook.EVENT_HEADER: str(job.payload.get("event") or job.payload.get("kind") or ""),
        }
        if job.payload.get("kind") == "senml":
            endpoint = session.get(ForwardingEndpoint, int(job.payload["endpoint_id"]))
            usable = endpoint is not None and endpoint.enabled
            url, secret = (endpoint.url, endpoint.hmac_secret) if endpoint else ("", "")
            session.commit()
            if not usable:
                raise _Dead("forwarding endpoint deleted or disabled")
            body = webhook.senml_body(job.payload["records"])
            headers["Content-Type"] = webhook.SENML_CONTENT_TYPE
            headers[webhook.SIGNATURE_HEADER] = webhook.sign(secret, body, ts)
        else:
            # Alarm events and tests, signed with the target's secret.
            target = (
                None if job.target_id is None else session.get(NotificationTarget, job.target_id)
            )
            secret = target.hmac_secret if target is not None else ""
            session.commit()
            if not secret:
                raise _Dead("webhook target deleted")
            url = job.recipient
            body = json.dumps(job.payload, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
            headers[webhook.SIGNATURE_HEADER] = webhook.sign(secret, body, ts)
        guard = self.lanes.addresses.guard
        return webhook.post(url, body, headers, settings.webhook_timeout_s, guard=guard)

    def _record_endpoint(
        self, session: Session, endpoint_id: int, status: int | None, error: str | None, *, ok: bool
    ) -> None:
        endpoint = session.get(ForwardingEndpoint, endpoint_id)
        if endpoint is not None:
            endpoint.record_attempt(self.lanes.clock(), status, error, ok=ok)
        session.commit()

    def _finish(
        self,
        session: Session,
        row_id: int,
        token: int,
        error: str | None,
        *,
        dead: bool = False,
        retry_in: timedelta | None = None,
    ) -> None:
        stats = self.lanes.stats
        now = self.lanes.clock()
        if not record(session, row_id, token, now, error=error, dead=dead, retry_in=retry_in):
            stats.count("lost")
            log.warning("delivery %s: lease lost before the outcome was recorded", row_id)
        elif error is None:
            stats.count("sent")
        elif dead or retry_in is None:
            stats.count("dead", f"{row_id}: {error}")
            log.warning("delivery %s dead: %s", row_id, error)
        else:
            stats.count("retried", f"{row_id}: {error}")
            log.info("delivery %s failed, retry in %s: %s", row_id, retry_in, error)
