"""Errors of the service layer.

Services under :mod:`cloud.services` raise these (never Flask's HTTP
exceptions); the web site maps them to pages (``cloud/web/__init__.py``)
and the API to JSON (:mod:`cloud.api.errors`), each in one place.
"""

from __future__ import annotations

from cloud.errors import CloudError


def N_(message: str) -> str:
    """Marks a message for translation where it is written (services cannot
    import Flask-Babel); the view translates it when showing it."""
    return message


class WebError(CloudError):
    """Base of the errors this layer raises on purpose.

    ``message`` is an English template with ``%(name)s`` placeholders filled
    from ``params``; ``str(err)`` is the filled-in English text, and views
    show ``gettext(err.template, **err.params)`` in the user's language.
    """

    def __init__(self, message: str, **params: object) -> None:
        self.template = message
        self.params = params
        super().__init__(message % params if params else message)


class NotFound(WebError):
    """The object does not exist *or belongs to another customer*: both look
    the same from outside, so ids cannot be probed (HTTP 404)."""


class Forbidden(WebError):
    """The user's role may see the object but not do this to it (HTTP 403)."""


class Invalid(WebError):
    """User input breaks a rule; the message is shown next to the form."""


class Throttled(WebError):
    """Too many failed logins from this source: try again after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, seconds=retry_after)
        self.retry_after = retry_after


class TokenInvalid(WebError):
    """A password-reset token is forged, expired or already used."""


class PublishError(WebError):
    """The broker did not accept a downlink message (unreachable, refused, timeout)."""


class MailError(WebError):
    """The mail server did not accept a message."""
