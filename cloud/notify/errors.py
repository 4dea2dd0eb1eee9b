"""Errors of the notification layer (delivery of e-mail and webhooks).

A sender raises :class:`TransientDeliveryError` when trying again later may
succeed (connection refused, timeout, SMTP 4xx, HTTP 5xx/429) and
:class:`PermanentDeliveryError` when it cannot (SMTP 5xx such as an unknown
mailbox, HTTP 4xx such as 404). The outbox retries the first with backoff
and moves the second straight to the dead-letter list.
"""

from __future__ import annotations

from cloud.errors import CloudError


class NotifyError(CloudError):
    """Base of the errors this layer raises on purpose."""


class DeliveryError(NotifyError):
    """One attempt to deliver one ledger row failed."""

    permanent = False


class TransientDeliveryError(DeliveryError):
    """The attempt failed for a reason that may go away: retry later."""


class UnreachableError(TransientDeliveryError):
    """The server could not be reached at all (refused, timed out, TLS or
    login failed): every other message to it in this batch would fail the
    same way, so the worker defers them without trying."""


class PermanentDeliveryError(DeliveryError):
    """The attempt failed for a reason retrying will not fix: dead-letter it."""

    permanent = True


class RenderError(NotifyError):
    """A ledger row's payload cannot be turned into a message (a bug or a
    row written by a newer version); the row is dead-lettered."""
