"""Errors of the cloud layer.

Every module under ``cloud/`` raises these (or subclasses of them) at its
boundary, re-raising driver and HTTP errors ``from`` the original, so callers
catch one family and the API maps it to JSON in one place.
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of every error the cloud layer raises on purpose."""


class ConfigError(CloudError):
    """A setting is unknown, malformed or out of range (raised at construction)."""


class DatabaseError(CloudError):
    """The relational database is unreachable, not migrated, or refused a statement."""


class InvalidValue(CloudError, ValueError):
    """A value handed to a model or store breaks its documented contract."""


class InvalidTransition(CloudError):
    """A state machine (alarm, config rollout) was asked for a move it does not allow."""


class TimeseriesError(CloudError):
    """The time-series backend failed: unreachable, refused a write, or sent garbage."""


class BackupFormatError(TimeseriesError):
    """An export file is not one this version wrote (bad header, line or version)."""
