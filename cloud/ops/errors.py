"""Errors of the operations layer (scheduler, backups, retention, billing, reports).

Each is a :class:`cloud.errors.CloudError`, raised at this layer's boundary
with the underlying cause chained (``raise ... from err``).
"""

from __future__ import annotations

from cloud.errors import CloudError


class OpsError(CloudError):
    """Base of the errors this layer raises on purpose."""


class BackupError(OpsError):
    """A backup could not be made (dump tool failed, disk full, unsupported database)."""


class RestoreError(OpsError):
    """A backup could not be restored, or the restored data differs from the manifest."""


class BillingError(OpsError):
    """An invoice cannot be computed (inconsistent contract dates)."""
