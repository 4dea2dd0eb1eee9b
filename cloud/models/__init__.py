"""Relational model of the cloud (SQLAlchemy 2 typed models).

Importing this package registers every table on :data:`Base.metadata`, which
is what the Alembic migrations are compared against. Production never calls
``create_all``: the schema comes from ``cloud.db.upgrade``.
"""

from cloud.models import ops as ops  # operations tables (cloud.ops)
from cloud.models import timeseries
from cloud.models.alarms import Alarm, AlarmCondition
from cloud.models.audit import AuditEntry
from cloud.models.base import Base, UTCDateTime, as_utc, utcnow
from cloud.models.commands import TerminalCommand
from cloud.models.configs import TerminalConfig
from cloud.models.enums import (
    AlarmState,
    ConfigStatus,
    Connectivity,
    DeliveryChannel,
    DeliveryStatus,
    Role,
    Severity,
    TerminalStatus,
)
from cloud.models.forwarding import ForwardingEndpoint
from cloud.models.labels import ChannelLabel
from cloud.models.maintenance import MaintenanceWindow
from cloud.models.notifications import Delivery, NotificationTarget
from cloud.models.ota import OtaBundle, OtaBundleFile, OtaRollout, OtaTarget
from cloud.models.parking import ParkedFrame
from cloud.models.sessions import WebSession
from cloud.models.tenancy import Customer, RecoveryCode, User
from cloud.models.terminals import (
    Channel,
    ChannelSpec,
    FrameReceipt,
    IngestCounter,
    Terminal,
    apply_birth,
    lock_terminals,
)

__all__ = [
    "Alarm",
    "AlarmCondition",
    "AlarmState",
    "AuditEntry",
    "Base",
    "Channel",
    "ChannelLabel",
    "ChannelSpec",
    "ConfigStatus",
    "Connectivity",
    "Customer",
    "Delivery",
    "DeliveryChannel",
    "DeliveryStatus",
    "ForwardingEndpoint",
    "FrameReceipt",
    "IngestCounter",
    "MaintenanceWindow",
    "NotificationTarget",
    "OtaBundle",
    "OtaBundleFile",
    "OtaRollout",
    "OtaTarget",
    "ParkedFrame",
    "RecoveryCode",
    "Role",
    "Severity",
    "Terminal",
    "TerminalCommand",
    "TerminalConfig",
    "TerminalStatus",
    "UTCDateTime",
    "User",
    "WebSession",
    "apply_birth",
    "as_utc",
    "lock_terminals",
    "timeseries",
    "utcnow",
]
