"""Forwarding endpoints (a customer's own server receiving copies of the
data: SenML webhooks, or CSV files by SFTP) and how their deliveries went.

The kind follows the address: ``https://...`` is a webhook, ``sftp://...``
a file destination. A webhook's HMAC secret is made here and shown once,
when the endpoint is created (or the secret rotated); pages afterwards show
only its first characters. An SFTP endpoint gets its own SSH key pair, made
here; its public half is shown whenever asked (the customer installs it),
the private half never leaves the database.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.errors import InvalidValue
from cloud.models import Customer, Delivery, ForwardingEndpoint, Terminal
from cloud.models.forwarding import FILE_PERIODS, FILE_SCOPES
from cloud.notify import files, sftp
from cloud.notify.netguard import AddressPolicy
from cloud.services import audit
from cloud.services.destinations import check_destination
from cloud.services.errors import N_, Invalid, NotFound
from cloud.services.scope import MANAGE_TARGETS, Viewer, get_scoped, require, scoped


def listing(session: Session, viewer: Viewer) -> list[ForwardingEndpoint]:
    return list(
        session.scalars(
            scoped(viewer, ForwardingEndpoint).order_by(
                ForwardingEndpoint.customer_id, ForwardingEndpoint.id
            )
        )
    )


@dataclass(frozen=True)
class FileInput:
    """How an SFTP endpoint cuts its files (ignored for webhooks)."""

    host_key: str = ""  # the server's key as ssh-keyscan or known_hosts show it
    period: str = "daily"
    scope: str = "terminal"
    timezone: str = "Asia/Tokyo"


def deliveries(session: Session, endpoint: ForwardingEndpoint, limit: int = 20) -> list[Delivery]:
    """The newest ledger rows of this endpoint (dedup key ``fwd:<id>:...``
    for SenML, ``file:<id>:...`` for files)."""
    prefix = "file" if endpoint.kind == "sftp" else "fwd"
    return list(
        session.scalars(
            sa.select(Delivery)
            .where(
                Delivery.dedup_key.like(f"{prefix}:{endpoint.id}:%"),
                Delivery.customer_id == endpoint.customer_id,
            )
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )


def _terminal_of(
    session: Session, viewer: Viewer, customer_id: int, terminal_id: str | None
) -> str | None:
    if not terminal_id:
        return None
    terminal = get_scoped(session, viewer, Terminal, terminal_id)
    if terminal.customer_id != customer_id:
        raise NotFound(f"terminal {terminal_id}")
    return terminal.id


def create(
    session: Session,
    viewer: Viewer,
    customer_id: int,
    *,
    name: str,
    url: str,
    terminal_id: str | None,
    addresses: AddressPolicy,
    now: datetime,
    ip: str | None,
    file: FileInput | None = None,
) -> tuple[ForwardingEndpoint, str]:
    """Add an endpoint; returns it and what to show once: a webhook's new
    secret, or an SFTP endpoint's public key (shown on its page too). The
    address must point at a public address or one ``addresses`` allows;
    an SFTP endpoint needs ``file`` with the server's host key."""
    require(viewer, MANAGE_TARGETS)
    get_scoped(session, viewer, Customer, customer_id)
    secret = secrets.token_urlsafe(32)
    try:
        endpoint = ForwardingEndpoint(
            customer_id=customer_id,
            name=name.strip()[:200],
            url=url.strip(),
            hmac_secret=secret,
            terminal_id=_terminal_of(session, viewer, customer_id, terminal_id),
        )
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    endpoint.kind = _kind(endpoint.url)
    _check_address(endpoint, addresses)
    if endpoint.kind == "sftp":
        _apply_file(endpoint, file or FileInput())
        endpoint.files_from = files.period_start(endpoint, now)
    session.add(endpoint)
    session.flush()
    if endpoint.kind == "sftp":
        endpoint.ssh_key, secret = sftp.new_key(_key_comment(endpoint))
    audit.record(
        session,
        viewer,
        "forwarding.create",
        "forwarding",
        endpoint.id,
        at=now,
        ip=ip,
        customer_id=customer_id,
        details={
            "url": endpoint.url,
            "terminal_id": endpoint.terminal_id,
            **_file_details(endpoint),
        },
    )
    session.commit()
    return endpoint, secret


def update(
    session: Session,
    viewer: Viewer,
    endpoint_id: object,
    *,
    name: str,
    url: str,
    terminal_id: str | None,
    enabled: bool,
    addresses: AddressPolicy,
    now: datetime,
    ip: str | None,
    file: FileInput | None = None,
) -> ForwardingEndpoint:
    """Change an endpoint; its kind cannot change (webhook stays webhook).
    For an SFTP endpoint, an empty host key in ``file`` keeps the pinned one."""
    require(viewer, MANAGE_TARGETS)
    endpoint = get_scoped(session, viewer, ForwardingEndpoint, endpoint_id)
    try:
        endpoint.url = url.strip()
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    if _kind(endpoint.url) != endpoint.kind:
        raise Invalid(N_("An endpoint cannot change between webhook and SFTP; add a new one."))
    _check_address(endpoint, addresses)
    if endpoint.kind == "sftp" and file is not None:
        _apply_file(endpoint, file, keep_host_key=True)
    endpoint.name = name.strip()[:200]
    endpoint.terminal_id = _terminal_of(session, viewer, endpoint.customer_id, terminal_id)
    endpoint.enabled = enabled
    audit.record(
        session,
        viewer,
        "forwarding.update",
        "forwarding",
        endpoint.id,
        at=now,
        ip=ip,
        customer_id=endpoint.customer_id,
        details={
            "url": endpoint.url,
            "terminal_id": endpoint.terminal_id,
            "enabled": enabled,
            **_file_details(endpoint),
        },
    )
    session.commit()
    return endpoint


def rotate_secret(
    session: Session, viewer: Viewer, endpoint_id: object, *, now: datetime, ip: str | None
) -> tuple[ForwardingEndpoint, str]:
    """A webhook's new signing secret, or an SFTP endpoint's new key pair
    (returns the public half to install; the old key stops working)."""
    require(viewer, MANAGE_TARGETS)
    endpoint = get_scoped(session, viewer, ForwardingEndpoint, endpoint_id)
    if endpoint.kind == "sftp":
        endpoint.ssh_key, secret = sftp.new_key(_key_comment(endpoint))
    else:
        secret = secrets.token_urlsafe(32)
        endpoint.hmac_secret = secret
    audit.record(
        session,
        viewer,
        "forwarding.secret.rotate",
        "forwarding",
        endpoint.id,
        at=now,
        ip=ip,
        customer_id=endpoint.customer_id,
    )
    session.commit()
    return endpoint, secret


def delete(
    session: Session, viewer: Viewer, endpoint_id: object, *, now: datetime, ip: str | None
) -> None:
    require(viewer, MANAGE_TARGETS)
    endpoint = get_scoped(session, viewer, ForwardingEndpoint, endpoint_id)
    audit.record(
        session,
        viewer,
        "forwarding.delete",
        "forwarding",
        endpoint.id,
        at=now,
        ip=ip,
        customer_id=endpoint.customer_id,
        details={"url": endpoint.url},
    )
    session.delete(endpoint)
    session.commit()


def public_key(endpoint: ForwardingEndpoint) -> str:
    """The line the customer adds to ``authorized_keys`` ("" for a webhook)."""
    if endpoint.kind != "sftp" or not endpoint.ssh_key:
        return ""
    return sftp.public_line(endpoint.ssh_key, _key_comment(endpoint))


def host_key_fingerprint(endpoint: ForwardingEndpoint) -> str:
    return sftp.fingerprint(endpoint.host_key) if endpoint.host_key else ""


def _kind(url: str) -> str:
    return "sftp" if url.startswith("sftp://") else "webhook"


def _key_comment(endpoint: ForwardingEndpoint) -> str:
    return f"mimamori-forwarding-{endpoint.customer_id}-{endpoint.id or 'new'}"


def _check_address(endpoint: ForwardingEndpoint, addresses: AddressPolicy) -> None:
    if endpoint.kind == "webhook":
        check_destination(addresses, endpoint.url)
        return
    try:
        dest = sftp.parse_url(endpoint.url)
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    # The same rule as for web addresses, on the same resolved addresses.
    check_destination(addresses, f"https://{dest.host}:{dest.port}/")


def _apply_file(
    endpoint: ForwardingEndpoint, file: FileInput, *, keep_host_key: bool = False
) -> None:
    if file.host_key.strip() or not keep_host_key:
        try:
            endpoint.host_key = sftp.parse_host_key(file.host_key)
        except InvalidValue as err:
            raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    if file.period not in FILE_PERIODS:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=f"period {file.period!r}")
    if file.scope not in FILE_SCOPES:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=f"scope {file.scope!r}")
    try:
        ZoneInfo(file.timezone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise Invalid(N_("Unknown time zone %(value)s."), value=file.timezone) from err
    endpoint.file_period, endpoint.file_scope = file.period, file.scope
    endpoint.file_timezone = file.timezone


def _file_details(endpoint: ForwardingEndpoint) -> dict[str, object]:
    if endpoint.kind != "sftp":
        return {}
    return {
        "file_period": endpoint.file_period,
        "file_scope": endpoint.file_scope,
        "file_timezone": endpoint.file_timezone,
        "host_key": host_key_fingerprint(endpoint),
    }
