"""Errors of the install and admin commands."""

from __future__ import annotations

from cloud.errors import CloudError


class AdminError(CloudError):
    """An install step or admin command cannot go on; the message says what to fix."""
