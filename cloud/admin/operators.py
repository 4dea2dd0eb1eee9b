"""``mimamori-admin create-operator``: the first operator of a site.

Builds the web app from the same settings the web processes read, so the
account, its password hashing and the invitation mail (its link, its
language, the SMTP relay) are exactly what the site itself would make.
"""

from __future__ import annotations

from collections.abc import Callable

from cloud.admin.errors import AdminError
from cloud.app import create_app
from cloud.models import utcnow
from cloud.services import admin as service
from cloud.services.errors import Invalid, MailError
from cloud.web.blueprints.auth import send_invitation_mail


def create_operator(
    email: str,
    *,
    name: str = "",
    language: str = "ja",
    password: str | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Create operator ``email`` with ``password``, or without one mail an
    invitation to choose it. Returns the new user's id. Raises
    :class:`AdminError` for a taken address, a weak password or a mail the
    relay refused (the account then exists: send a reset from the site)."""
    app = create_app()
    ctx = app.extensions["mimamori"]
    try:
        with ctx.sessions() as session:
            try:
                user = service.create_operator(
                    session,
                    ctx.passwords,
                    email,
                    name=name,
                    language=language,
                    password=password,
                    now=utcnow(),
                )
            except Invalid as err:
                raise AdminError(str(err)) from err
            say(f"operator {user.email} created (user {user.id})")
            if password is None:
                base = ctx.web.site_url or "http://localhost"
                with app.test_request_context(base_url=base):
                    try:
                        send_invitation_mail(user)
                    except MailError as err:
                        raise AdminError(
                            f"{err}; the account exists: send a reset link from the site"
                        ) from err
                say(
                    f"invitation mailed to {user.email} (the link is valid for "
                    f"{ctx.web.invitation_max_age_s // 86400} days)"
                )
            return user.id
    finally:
        ctx.engine.dispose()
