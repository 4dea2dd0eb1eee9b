"""Per-app collaborators and per-request helpers the views share.

:class:`WebContext` (``app.extensions["mimamori"]``) holds what
:func:`cloud.app.create_app` built: settings, engine, session factory,
time-series store, password hasher and clock. Views reach them through the
small functions below rather than through globals of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from flask import current_app, g, request
from flask_babel import gettext
from flask_login import current_user
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from cloud.config import Settings
from cloud.http.settings import WebSettings
from cloud.models import User
from cloud.notify.netguard import AddressPolicy
from cloud.services.errors import WebError
from cloud.services.mailer import Mailer
from cloud.services.passwords import Passwords
from cloud.services.publisher import Publisher
from cloud.services.scope import Viewer
from cloud.services.throttle import ThrottlePolicy
from cloud.timeseries import TimeSeriesStore


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    web: WebSettings
    engine: Engine
    sessions: sessionmaker[Session]
    store: TimeSeriesStore
    passwords: Passwords
    throttle: ThrottlePolicy
    clock: Callable[[], datetime]
    # Where webhooks and forwarding may point (the notify settings' webhook_allow).
    addresses: AddressPolicy


def ctx() -> WebContext:
    return cast(WebContext, current_app.extensions["mimamori"])


def publisher() -> Publisher:
    return cast(Publisher, current_app.extensions["mimamori_publisher"])


def mailer() -> Mailer:
    return cast(Mailer, current_app.extensions["mimamori_mailer"])


def db() -> Session:
    """The request's session (opened on first use, closed at teardown)."""
    if "db" not in g:
        g.db = ctx().sessions()
    return cast(Session, g.db)


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def secret_key() -> str:
    """The key signing sessions and tokens (generated when none was set)."""
    return str(current_app.config["SECRET_KEY"])


def now() -> datetime:
    return ctx().clock()


def client_ip() -> str | None:
    """The client address (after ProxyFix when proxies are trusted)."""
    return request.remote_addr


class SessionUser:
    """What Flask-Login holds for a logged-in :class:`User`: the login
    interface, and every attribute of the user itself."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, user: User, session_id: str) -> None:
        self.user = user
        self._session_id = session_id

    @property
    def is_active(self) -> bool:
        return self.user.may_log_in

    def get_id(self) -> str:
        return self._session_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.user, name)


def user() -> User:
    """The logged-in user (views behind login_required only)."""
    return cast(SessionUser, current_user).user


def viewer() -> Viewer:
    return Viewer.of(user())


def zone() -> ZoneInfo:
    """The zone times are shown in: the user's customer's, else the site default."""
    u: Any = current_user
    if u.is_authenticated and u.customer is not None:
        return ZoneInfo(u.customer.timezone)
    return ZoneInfo(ctx().settings.default_timezone)


def message(err: WebError) -> str:
    """A service error's message in the user's language."""
    return str(gettext(err.template, **err.params))
