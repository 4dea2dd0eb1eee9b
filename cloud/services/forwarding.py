"""Forwarding endpoints (a customer's own server receiving SenML copies) and
how their deliveries went.

The HMAC secret is made here and shown once, when the endpoint is created
(or the secret rotated); pages afterwards show only its first characters.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.errors import InvalidValue
from cloud.models import Customer, Delivery, ForwardingEndpoint, Terminal
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


def deliveries(session: Session, endpoint: ForwardingEndpoint, limit: int = 20) -> list[Delivery]:
    """The newest ledger rows of this endpoint (dedup key ``fwd:<id>:...``)."""
    return list(
        session.scalars(
            sa.select(Delivery)
            .where(
                Delivery.dedup_key.like(f"fwd:{endpoint.id}:%"),
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
) -> tuple[ForwardingEndpoint, str]:
    """Add an endpoint; returns it and its new secret (show it once). The URL
    must point at a public address or one ``addresses`` allows."""
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
    check_destination(addresses, endpoint.url)
    session.add(endpoint)
    session.flush()
    audit.record(
        session,
        viewer,
        "forwarding.create",
        "forwarding",
        endpoint.id,
        at=now,
        ip=ip,
        customer_id=customer_id,
        details={"url": endpoint.url, "terminal_id": endpoint.terminal_id},
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
) -> ForwardingEndpoint:
    require(viewer, MANAGE_TARGETS)
    endpoint = get_scoped(session, viewer, ForwardingEndpoint, endpoint_id)
    try:
        endpoint.url = url.strip()
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    check_destination(addresses, endpoint.url)
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
        details={"url": endpoint.url, "terminal_id": endpoint.terminal_id, "enabled": enabled},
    )
    session.commit()
    return endpoint


def rotate_secret(
    session: Session, viewer: Viewer, endpoint_id: object, *, now: datetime, ip: str | None
) -> tuple[ForwardingEndpoint, str]:
    require(viewer, MANAGE_TARGETS)
    endpoint = get_scoped(session, viewer, ForwardingEndpoint, endpoint_id)
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
