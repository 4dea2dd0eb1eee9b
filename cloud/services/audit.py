"""Writing the audit log (activity and security events of people).

Every change a person makes through the site adds one :class:`AuditEntry`
in the same transaction as the change, so the log can never claim a change
that was rolled back, nor miss one that was committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cloud.models import AuditEntry
from cloud.services.scope import Viewer


def record(
    session: Session,
    viewer: Viewer | None,
    action: str,
    object_type: str,
    object_id: object = "",
    *,
    at: datetime,
    ip: str | None,
    customer_id: int | None = None,
    details: dict[str, Any] | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """Add one entry (the caller commits). ``actor`` defaults to the viewer's
    e-mail; ``customer_id`` to the viewer's customer."""
    entry = AuditEntry(
        at=at,
        actor_user_id=viewer.user_id if viewer else None,
        actor=(actor or (viewer.email if viewer else "anonymous"))[:254],
        customer_id=customer_id
        if customer_id is not None
        else (viewer.customer_id if viewer else None),
        action=action[:64],
        object_type=object_type[:32],
        object_id=str(object_id)[:64],
        details=details or {},
        ip=(ip or None) and ip[:45],
    )
    session.add(entry)
    return entry
