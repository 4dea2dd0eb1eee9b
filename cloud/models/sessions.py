"""Web sessions kept on the server, so that logging out really ends one.

The session cookie (signed, held by the browser) names a row here by a
random token; the row holds only the token's SHA-256. Logout ends the row,
so a copy of the cookie is worthless afterwards; every session also ends a
fixed time after login (absolute lifetime), however busy it is.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow


class WebSession(Base):
    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
