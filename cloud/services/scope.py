"""Who is asking, and which objects they may see.

Every object a request names by id is loaded through :func:`get_scoped`: it
adds the customer condition to the query itself, so an object of another
customer is simply not found (:class:`NotFound`, HTTP 404), exactly like an
id that does not exist. Lists go through :func:`scoped` for the same reason.
Staff (operators, installers) see every customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import (
    Alarm,
    Customer,
    Delivery,
    ForwardingEndpoint,
    NotificationTarget,
    Role,
    Terminal,
    User,
)
from cloud.models.enums import CUSTOMER_ROLES
from cloud.models.ops import Invoice, MonthlyReport
from cloud.services.errors import Forbidden, NotFound

M = TypeVar("M")

# Roles allowed to change things, per area.
CONFIGURE = (Role.OPERATOR, Role.INSTALLER, Role.CUSTOMER_ADMIN)
MANAGE_TARGETS = (Role.OPERATOR, Role.CUSTOMER_ADMIN)
ACKNOWLEDGE = (Role.OPERATOR, Role.INSTALLER, Role.CUSTOMER_ADMIN, Role.CUSTOMER_VIEWER)
PROVISION = (Role.OPERATOR, Role.INSTALLER)
OPERATE = (Role.OPERATOR,)
BILLING = (Role.OPERATOR, Role.CUSTOMER_ADMIN)
TEAM = (Role.CUSTOMER_ADMIN,)  # a customer's own users (operators: the admin area)


@dataclass(frozen=True)
class Viewer:
    """The logged-in person as services see them (no Flask objects)."""

    user_id: int
    email: str
    role: Role
    customer_id: int | None

    @classmethod
    def of(cls, user: User) -> Viewer:
        return cls(user.id, user.email, Role(user.role), user.customer_id)

    @property
    def is_staff(self) -> bool:
        return self.role not in CUSTOMER_ROLES

    def may(self, roles: tuple[Role, ...]) -> bool:
        return self.role in roles


def require(viewer: Viewer, roles: tuple[Role, ...]) -> None:
    """Raise :class:`Forbidden` unless the viewer has one of ``roles``."""
    if viewer.role not in roles:
        raise Forbidden(f"role {viewer.role} may not do this")


def _owner_column(model: type[Any]) -> Any:
    """The column holding the owning customer's id, for the scoping condition."""
    owners: dict[type[Any], Any] = {
        Terminal: Terminal.customer_id,
        Alarm: Terminal.customer_id,  # joined below
        NotificationTarget: NotificationTarget.customer_id,
        ForwardingEndpoint: ForwardingEndpoint.customer_id,
        Delivery: Delivery.customer_id,
        Customer: Customer.id,
        User: User.customer_id,
        Invoice: Invoice.customer_id,
        MonthlyReport: MonthlyReport.customer_id,
    }
    try:
        return owners[model]
    except KeyError as err:
        raise TypeError(f"{model.__name__} has no scoping rule") from err


def scoped(viewer: Viewer, model: type[M]) -> sa.Select[M]:
    """``SELECT model`` limited to what ``viewer`` may see."""
    stmt: sa.Select[M] = sa.select(model)
    if model is Alarm:
        stmt = stmt.join(Terminal, Terminal.id == Alarm.terminal_id)
    if viewer.is_staff:
        return stmt
    if viewer.customer_id is None:  # cannot happen (DB check), but never widen
        return stmt.where(sa.false())
    return stmt.where(_owner_column(model) == viewer.customer_id)


def get_scoped(session: Session, viewer: Viewer, model: type[M], ident: object) -> M:
    """Load ``model`` by primary key if ``viewer`` may see it, else raise
    :class:`NotFound` (also for a malformed id)."""
    pk = sa.inspect(model).primary_key[0]
    try:
        value = pk.type.python_type(ident)
    except (TypeError, ValueError) as err:
        raise NotFound(f"{model.__name__} {ident!r}") from err
    if isinstance(value, int) and not -_int_limit(pk.type) <= value < _int_limit(pk.type):
        # No row has such an id; the database would fail on it (SQLite
        # OverflowError, PostgreSQL out of range) instead of finding nothing.
        raise NotFound(f"{model.__name__} {ident!r}")
    obj = session.scalars(scoped(viewer, model).where(pk == value)).first()
    if obj is None:
        raise NotFound(f"{model.__name__} {ident!r}")
    return obj


def _int_limit(column_type: Any) -> int:
    return 2**63 if isinstance(column_type, sa.BigInteger) else 2**31


def terminal_ids(session: Session, viewer: Viewer) -> list[str]:
    """Ids of the terminals ``viewer`` may see, sorted."""
    return list(
        session.scalars(
            scoped(viewer, Terminal).with_only_columns(Terminal.id).order_by(Terminal.id)
        )
    )
