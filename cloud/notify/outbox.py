"""The delivery worker: send due ledger rows, retry with backoff, dead-letter.

Claiming with a lease. A row is due when its status is ``queued`` or
``failed`` and ``next_attempt_at <= now``. A worker claims a batch in one
atomic statement that pushes ``next_attempt_at`` to ``now + lease`` and
counts the attempt (``attempts + 1``)::

    -- PostgreSQL, one transaction:
    SELECT id ... due ... ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED
    UPDATE notification_ledger SET next_attempt_at = :lease_end, attempts = attempts + 1
    WHERE id IN (:ids) AND <due> RETURNING id, attempts
    -- SQLite, one statement:
    UPDATE ... WHERE id IN (SELECT id ... due ... LIMIT :n) AND <due> RETURNING id, attempts

Before claiming, :func:`any_due` asks a read-only question on the
``(status, next_attempt_at)`` index: is anything due at all? An idle worker
therefore polls often (a delivery should start within a fraction of a second
of the alarm's commit) without writing: on SQLite the claim's UPDATE takes
the database's single write lock even when it matches nothing, which would
make every idle poll queue behind, and hold up, the ingest's commits.

On PostgreSQL, ``SKIP LOCKED`` lets concurrent workers take different rows
without waiting; on SQLite the statement runs under the database's single
write lock. On both, repeating the due condition in the UPDATE makes a
second claim of a row match nothing. A claimed row is invisible to other workers until its lease
ends, so two workers never send the same row; a worker that dies mid-send
leaves the row to be claimed again once the lease has passed (that retry
reuses the Message-ID / delivery id, so the receiver can drop a duplicate).
The claimed ``attempts`` value is the lease token: the outcome is written
only if the row still has it (``WHERE id = :id AND attempts = :token``), so a
worker whose lease expired cannot overwrite a newer claim's result.

The leased row keeps status ``queued``/``failed`` (the schema has no
``sending`` status): "in flight" is ``next_attempt_at`` in the future with
``attempts`` just incremented. The row carries its attempt count, so a row
whose worker keeps crashing is dead-lettered after ``max_attempts`` claims.

Sending happens outside any database transaction: no row lock or SQLite
write lock is held while waiting for a mail server.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud import forwarding
from cloud.models import Delivery, DeliveryChannel, DeliveryStatus, ForwardingEndpoint, as_utc
from cloud.notify import mail, webhook
from cloud.notify.errors import DeliveryError, NotifyError, RenderError, UnreachableError
from cloud.notify.settings import NotifySettings, RetryPolicy

log = logging.getLogger(__name__)

_OPEN = (DeliveryStatus.QUEUED, DeliveryStatus.FAILED)
DEFAULT_BATCH = 50


@dataclass
class RunStats:
    """What one :func:`run_once` did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0  # outcome not recorded: the lease had passed to another worker
    released: int = 0  # claimed but handed back unsent (batch ran out of time)
    errors: list[str] = field(default_factory=list)


def _due(now: datetime) -> tuple[Any, ...]:
    return (Delivery.status.in_(_OPEN), Delivery.next_attempt_at <= now)


def any_due(session: Session, now: datetime) -> bool:
    """True if a row is due at ``now``. Read-only (no lock taken), served by the
    ``ix_notification_ledger_due`` index; ends the read transaction."""
    found = session.scalar(sa.select(Delivery.id).where(*_due(as_utc(now))).limit(1))
    session.commit()
    return found is not None


def claim(
    session: Session, now: datetime, policy: RetryPolicy, limit: int = DEFAULT_BATCH
) -> list[tuple[int, int]]:
    """Claim up to ``limit`` due rows for ``policy.lease``; commit; return
    ``(id, attempts)`` pairs (``attempts`` is the lease token)."""
    now = as_utc(now)
    is_due = _due(now)
    due = (
        sa.select(Delivery.id)
        .where(*is_due)
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    )
    target: Any
    if session.get_bind().dialect.name == "postgresql":
        # Lock first, in its own statement: inside "id IN (subquery)" the
        # planner may run a LIMIT ... SKIP LOCKED subquery more than once and
        # claim far more than ``limit`` rows. The locks last until commit.
        target = list(session.scalars(due.with_for_update(skip_locked=True)))
        if not target:
            session.commit()
            return []
    else:
        target = due.scalar_subquery()
    stmt = (
        sa.update(Delivery)
        .where(Delivery.id.in_(target), *is_due)
        .values(next_attempt_at=now + policy.lease, attempts=Delivery.attempts + 1)
        .returning(Delivery.id, Delivery.attempts)
        .execution_options(synchronize_session=False)
    )
    rows = [(int(i), int(a)) for i, a in session.execute(stmt).all()]
    session.commit()
    return sorted(rows)


def run_once(
    session: Session,
    now: datetime,
    settings: NotifySettings | None = None,
    policy: RetryPolicy | None = None,
    *,
    limit: int = DEFAULT_BATCH,
) -> RunStats:
    """Claim and send one batch of due rows at ``now``; record each outcome.

    ``settings`` default to :meth:`NotifySettings.from_env`. The session must
    not hold uncommitted work: this function commits (claim, then each
    outcome separately). When nothing is due it only reads (:func:`any_due`)
    and returns empty stats. Never raises for a failed delivery; that is what
    the ledger records.
    """
    now = as_utc(now)
    settings = settings or NotifySettings.from_env()
    policy = policy or RetryPolicy()
    session.commit()
    stats = RunStats()
    if not any_due(session, now):
        return stats
    # Stop sending well before the leases run out, so that no row is still
    # being worked on here when another worker may claim it again.
    budget_end = time.monotonic() + policy.lease_s / 2
    claimed = claim(session, now, policy, limit)
    stats.claimed = len(claimed)
    with mail.SmtpMailer(settings) as mailer:
        batch = _Batch(session, now, settings, policy, mailer, stats)
        for row_id, token in claimed:
            if time.monotonic() > budget_end:
                batch.release(row_id, token)
            else:
                batch.deliver(row_id, token)
    return stats


def dead_letters(
    session: Session, *, customer_id: int | None = None, limit: int = 100
) -> list[Delivery]:
    """Dead rows, newest first: what a human has to look at."""
    stmt = sa.select(Delivery).where(Delivery.status == DeliveryStatus.DEAD)
    if customer_id is not None:
        stmt = stmt.where(Delivery.customer_id == customer_id)
    return list(session.scalars(stmt.order_by(Delivery.id.desc()).limit(limit)))


def requeue(session: Session, delivery_id: int, now: datetime) -> bool:
    """Give a dead row a fresh retry budget (after the cause was fixed).
    False if the row is not dead. The caller commits."""
    result = session.execute(
        sa.update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.DEAD)
        .values(status=DeliveryStatus.QUEUED, attempts=0, next_attempt_at=as_utc(now))
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


# -- internals -------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What a send needs from a row, read before the transaction ends."""

    id: int
    dedup_key: str
    channel: DeliveryChannel
    recipient: str
    language: str
    payload: dict[str, Any]


class _Dead(DeliveryError):
    permanent = True


@dataclass
class _Batch:
    session: Session
    now: datetime
    settings: NotifySettings
    policy: RetryPolicy
    mailer: mail.SmtpMailer
    stats: RunStats
    # Servers found unreachable in this batch ("smtp" or a webhook URL's
    # host): later rows for them are deferred at once instead of each
    # waiting out its own connection timeout.
    down: dict[str, str] = field(default_factory=dict)

    def deliver(self, row_id: int, token: int) -> None:
        row = self.session.get(Delivery, row_id, populate_existing=True)
        if row is None:
            return
        job = _Job(
            row.id,
            row.dedup_key,
            DeliveryChannel(row.channel),
            row.recipient,
            row.language,
            dict(row.payload or {}),
        )
        self.session.commit()  # end the read transaction before any network I/O
        if token > self.policy.max_attempts:
            # Claimed this often without an outcome: the worker dies on this row.
            self.finish(job.id, token, error=f"no outcome after {token - 1} claims", dead=True)
            return
        endpoint_id = job.payload.get("endpoint_id") if job.payload.get("kind") == "senml" else None
        status: int | None = None
        server = self.server_of(job)
        try:
            if server in self.down:
                raise UnreachableError(f"{self.down[server]} (not retried in this batch)")
            if job.channel == DeliveryChannel.EMAIL:
                msg = mail.compose(
                    dedup_key=job.dedup_key,
                    recipient=job.recipient,
                    payload=job.payload,
                    language=job.language,
                    settings=self.settings,
                    now=self.now,
                )
                self.mailer.send(msg, job.recipient)
            else:
                status = self.post(job)
        except RenderError as err:
            self.finish(job.id, token, error=f"render: {err}", dead=True)
            return
        except DeliveryError as err:
            if isinstance(err, UnreachableError):
                self.down.setdefault(server, str(err))
            if endpoint_id is not None:
                self.record_endpoint(int(endpoint_id), webhook.status_of(err), str(err))
            retry_in = None if err.permanent else self.policy.delay(token)
            self.finish(job.id, token, error=str(err), dead=retry_in is None, retry_in=retry_in)
            return
        except NotifyError as err:
            self.finish(job.id, token, error=str(err), dead=True)
            return
        if endpoint_id is not None:
            self.record_endpoint(int(endpoint_id), status, None)
        self.finish(job.id, token)

    def server_of(self, job: _Job) -> str:
        if job.channel == DeliveryChannel.EMAIL:
            return "smtp"
        url = job.recipient
        if job.payload.get("kind") == "senml":
            endpoint = self.session.get(ForwardingEndpoint, int(job.payload["endpoint_id"]))
            url = endpoint.url if endpoint is not None else url
            self.session.commit()
        return urlsplit(url).netloc or url

    def release(self, row_id: int, token: int) -> None:
        """Hand a claimed, unsent row back at once, its attempt uncounted."""
        self.session.execute(
            sa.update(Delivery)
            .where(Delivery.id == row_id, Delivery.attempts == token, Delivery.status.in_(_OPEN))
            .values(attempts=token - 1, next_attempt_at=self.now)
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        self.stats.released += 1

    def post(self, job: _Job) -> int:
        """POST a webhook row: SenML for forwarding (signed), the event JSON
        for alarm targets. Raises :class:`DeliveryError`."""
        # The signed timestamp is the real send time, whatever ``now`` the
        # caller passed, so receivers can hold it against their own clock.
        ts = int(time.time())
        headers = {
            webhook.TIMESTAMP_HEADER: str(ts),
            webhook.DELIVERY_HEADER: mail.message_id(
                job.dedup_key, self.settings.message_id_domain
            )[1:-1],
            webhook.EVENT_HEADER: str(job.payload.get("event") or job.payload.get("kind") or ""),
        }
        if job.payload.get("kind") == "senml":
            endpoint = self.session.get(ForwardingEndpoint, int(job.payload["endpoint_id"]))
            usable = endpoint is not None and endpoint.enabled
            url, secret = (endpoint.url, endpoint.hmac_secret) if endpoint else ("", "")
            self.session.commit()
            if not usable:
                raise _Dead("forwarding endpoint deleted or disabled")
            body = forwarding.body_of(job.payload["records"])
            headers["Content-Type"] = forwarding.CONTENT_TYPE
            headers[webhook.SIGNATURE_HEADER] = webhook.sign(secret, body, ts)
        else:
            url = job.recipient
            body = json.dumps(job.payload, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        return webhook.post(url, body, headers, self.settings.webhook_timeout_s)

    def record_endpoint(self, endpoint_id: int, status: int | None, error: str | None) -> None:
        endpoint = self.session.get(ForwardingEndpoint, endpoint_id)
        if endpoint is not None:
            endpoint.record_attempt(self.now, status, error)
        self.session.commit()

    def finish(
        self,
        row_id: int,
        token: int,
        *,
        error: str | None = None,
        dead: bool = False,
        retry_in: timedelta | None = None,
    ) -> None:
        """Write the outcome if the lease is still ours; commit."""
        values: dict[str, Any]
        if error is None:
            values = {
                "status": DeliveryStatus.SENT,
                "sent_at": self.now,
                "next_attempt_at": None,
                "last_error": None,
            }
        elif dead or retry_in is None:
            dead = True
            values = {
                "status": DeliveryStatus.DEAD,
                "next_attempt_at": None,
                "last_error": error[:2000],
            }
        else:
            values = {
                "status": DeliveryStatus.FAILED,
                "next_attempt_at": self.now + retry_in,
                "last_error": error[:2000],
            }
        result = self.session.execute(
            sa.update(Delivery)
            .where(Delivery.id == row_id, Delivery.attempts == token, Delivery.status.in_(_OPEN))
            .values(**values)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
        recorded = result.first() is not None
        self.session.commit()
        stats = self.stats
        if not recorded:
            stats.lost += 1
            log.warning("delivery %s: lease lost before the outcome was recorded", row_id)
        elif error is None:
            stats.sent += 1
        elif dead:
            stats.dead += 1
            stats.errors.append(f"{row_id}: {error}")
            log.warning("delivery %s dead: %s", row_id, error)
        else:
            stats.retried += 1
            stats.errors.append(f"{row_id}: {error}")
            log.info("delivery %s failed, retry in %s: %s", row_id, retry_in, error)
