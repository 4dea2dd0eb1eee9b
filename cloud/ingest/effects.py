"""What each accepted frame changes in the relational database.

Called by :class:`cloud.ingest.service.IngestService` inside the batch
transaction, on a Terminal row it has locked, in the order the frames
arrived. Samples are not written here: they went to the time-series store
before this transaction began (see the service's docstring for why).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cloud.errors import InvalidTransition
from cloud.ingest.channels import record_late_birth, specs_of
from cloud.models import AuditEntry, ConfigStatus, Connectivity, Terminal, apply_birth
from cloud.services import commands, ota


def is_current_boot(terminal: Terminal, boot: int) -> bool:
    """True unless ``boot`` is older than the newest birth processed."""
    return terminal.last_boot is None or boot >= terminal.last_boot


def set_connectivity(terminal: Terminal, state: Connectivity, at: datetime) -> None:
    if terminal.connectivity != state:
        terminal.connectivity = state
        terminal.connectivity_since = at


def birth(session: Session, terminal: Terminal, frame: dict[str, Any], at: datetime) -> bool:
    """Upsert the channel table, firmware, sensors, config version and boot; online.

    A birth of an older boot (drained from the outbox after the current
    boot's birth) only records its channel table for that boot's data.
    Returns True if the channel rows changed.
    """
    specs = specs_of(frame["channels"])
    boot = frame["boot"]
    if not is_current_boot(terminal, boot):
        return record_late_birth(session, terminal.id, specs, boot, at)
    changed = apply_birth(session, terminal.id, specs, boot, at)
    terminal.last_boot = boot
    terminal.firmware_version = frame["fw"]
    # Which profile each sensor runs; None from firmware that does not say,
    # so a downgrade does not leave the newer firmware's list standing.
    terminal.devices = frame.get("devices")
    cfg = frame["cfg"]
    if cfg:  # 0 means "no config yet", which says nothing about the cloud's
        terminal.config_version = cfg
        # The terminal runs the pending config: its cfgack may have been lost.
        if (
            terminal.config_status == ConfigStatus.PENDING
            and terminal.config_pending_version == cfg
        ):
            terminal.config_status = ConfigStatus.APPLIED
            terminal.config_reason = None
            terminal.config_status_at = at
    set_connectivity(terminal, Connectivity.ONLINE, at)
    return changed


def death(terminal: Terminal, frame: dict[str, Any], at: datetime) -> None:
    """The broker published the terminal's last will: offline.

    Stale wills change nothing: one of an older boot (the terminal has
    rebooted since), or one received before a frame already processed (with
    several workers, the new connection's birth may overtake the old will).
    The alarm engine applies the same rule to its ``offline`` condition.
    """
    if not is_current_boot(terminal, frame["boot"]):
        return
    if terminal.last_seen_at is not None and terminal.last_seen_at > at:
        return
    set_connectivity(terminal, Connectivity.OFFLINE, at)


def seen(terminal: Terminal, frame: dict[str, Any], at: datetime) -> None:
    """Heard from the terminal at ``at`` (a will is the broker's, not a sign of life)."""
    if frame["type"] == "death":
        return
    if terminal.last_seen_at is None or terminal.last_seen_at < at:
        terminal.last_seen_at = at


def cfgack(session: Session, terminal: Terminal, frame: dict[str, Any], at: datetime) -> None:
    """Config applied or rejected; audited either way. A stale or repeated
    ack (not for the pending version) changes no state but is audited."""
    stale = False
    try:
        terminal.config_acked(frame["version"], frame["ok"], frame["reason"], at)
    except InvalidTransition:
        stale = True
    session.add(
        _audit(
            terminal,
            "terminal.config.ack",
            at,
            {
                "version": frame["version"],
                "ok": frame["ok"],
                "reason": frame["reason"],
                "stale": stale,
                "boot": frame["boot"],
                "seq": frame["seq"],
            },
        )
    )


def cmdres(session: Session, terminal: Terminal, frame: dict[str, Any], at: datetime) -> None:
    """Store a command result where operators and the API can find it: on its
    command's row (:func:`cloud.services.commands.record_result`) and in
    the audit log."""
    commands.record_result(
        session, terminal.id, frame["id"], ok=frame["ok"], result=frame["result"], at=at
    )
    session.add(
        _audit(
            terminal,
            "terminal.cmd.result",
            at,
            {
                "id": frame["id"],
                "ok": frame["ok"],
                "result": frame["result"],
                "boot": frame["boot"],
                "seq": frame["seq"],
                "ts": frame["ts"],
            },
        )
    )


def _audit(terminal: Terminal, action: str, at: datetime, details: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        at=at,
        actor=f"terminal:{terminal.id}",
        customer_id=terminal.customer_id,
        action=action,
        object_type="terminal",
        object_id=terminal.id,
        details=details,
    )


def otastat(terminal: Terminal, session: Session, frame: dict[str, Any], at: datetime) -> None:
    """An update's progress or outcome (docs/ota.md) on its rollout target."""
    ota.record_status(session, terminal.id, frame, at)
