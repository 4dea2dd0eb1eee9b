"""Closed vocabularies of the relational model (stored as their string values)."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """What a user may do. Staff roles have no customer; customer roles must."""

    OPERATOR = "operator"  # runs the service: every customer, billing, admin
    INSTALLER = "installer"  # registers and commissions terminals on site
    CUSTOMER_ADMIN = "customer_admin"  # configures their own terminals and targets
    CUSTOMER_VIEWER = "customer_viewer"  # reads graphs and alarms, acknowledges


CUSTOMER_ROLES = (Role.CUSTOMER_ADMIN, Role.CUSTOMER_VIEWER)


class Connectivity(enum.StrEnum):
    """Terminal link state as the cloud last concluded it."""

    UNKNOWN = "unknown"  # never heard from
    ONLINE = "online"
    OFFLINE = "offline"  # last will received or heartbeats missed


class TerminalStatus(enum.StrEnum):
    """Whether a terminal may use the service; the broker account follows it."""

    ACTIVE = "active"
    SUSPENDED = "suspended"  # account disabled; data and settings kept; reversible
    DECOMMISSIONED = "decommissioned"  # account deleted; data kept for retention


class ConfigStatus(enum.StrEnum):
    """Outcome of the last configuration pushed to a terminal."""

    NONE = "none"  # nothing pushed yet
    PENDING = "pending"  # published, no ack yet
    APPLIED = "applied"
    REJECTED = "rejected"  # terminal refused it; see config_reason


class Severity(enum.StrEnum):
    WARNING = "warning"
    ALARM = "alarm"


class AlarmState(enum.StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class DeliveryChannel(enum.StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"
    CHAT = "chat"  # chat and push services through Apprise (cloud.notify.chat)


class DeliveryStatus(enum.StrEnum):
    """Outbox life of one notification to one recipient."""

    QUEUED = "queued"  # waiting for its first or next attempt (next_attempt_at)
    SENT = "sent"  # accepted by the SMTP server / webhook answered 2xx
    FAILED = "failed"  # last attempt failed; will be retried
    DEAD = "dead"  # gave up after the retry budget; needs a human
