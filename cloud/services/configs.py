"""Terminal settings: thresholds, sampling, overrides, and the config rollout.

Saving settings (:func:`save`) does, in one transaction with the terminal's
row locked (so two saves cannot pick the same version):

1. apply the threshold rules to the terminal's :class:`AlarmCondition` rows;
2. build the terminal's *cloud config* and run the validator the terminal
   runs, :func:`protocol.config.validate_cloud`, on it, so the site refuses
   exactly what the terminal would refuse;
3. take the next version, record it as pending on the terminal and store the
   document (:class:`cloud.models.TerminalConfig`, never pruned: the config
   in force; and the audit entry ``terminal.config.push`` with the whole
   config, who and from where);
4. publish it as a **retained** ``config`` frame on ``mm/v1/<tid>/down/config``;
5. commit. A failed publish rolls everything back, so the site never shows
   "pending" for a config the broker does not have.

The terminal answers with a ``cfgack`` frame; the ingest turns it into
applied (version) or rejected (reason) on the terminal row.

The cloud does not know the terminal's wiring, only the channels its birth
frame announced (``<device>.<point>`` names with their kinds), so the
validator gets those channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.alarms.engine import lock_terminal
from cloud.models import AlarmCondition, Channel, Terminal, TerminalConfig
from cloud.services import audit
from cloud.services.errors import N_, Invalid, NotFound, PublishError
from cloud.services.publisher import Publisher
from cloud.services.scope import Viewer
from protocol import config as terminal_config
from protocol import frames, topics
from protocol.errors import ConfigError, ProtocolError

PUSH_ACTION = "terminal.config.push"
TERMINAL_CONDS = terminal_config.CONDS  # conditions the terminal decides itself
U32_MAX = 0xFFFFFFFF
_RULE_FIELDS = (
    "warn",
    "alarm",
    "hysteresis",
    "on_delay_s",
    "off_delay_s",
    "count",
    "window_s",
    "enabled",
    "override_warn",
    "override_alarm",
    "override_until",
)


@dataclass(frozen=True)
class RuleInput:
    """One threshold rule as the settings form gives it (already parsed)."""

    channel: str
    cond: str
    warn: float | None = None
    alarm: float | None = None
    hysteresis: float = 0.0
    on_delay_s: int = 0
    off_delay_s: int = 0
    count: int | None = None
    window_s: int | None = None
    enabled: bool = True
    override_warn: float | None = None
    override_alarm: float | None = None
    override_until: datetime | None = None


@dataclass(frozen=True)
class SettingsInput:
    """Everything the settings form submits."""

    rules: dict[int, RuleInput | None]  # existing rule id -> new values (None: delete)
    new_rule: RuleInput | None
    sampling: dict[str, int]  # channel -> seconds (absent: the site's interval)
    heartbeat: int
    upload: int


@dataclass(frozen=True)
class SettingsView:
    """What the settings page shows."""

    channels: list[Channel]
    rules: list[AlarmCondition]
    sampling: dict[str, int]
    heartbeat: int
    upload: int
    document: dict[str, Any] | None  # the last config sent, if any
    document_version: int | None


# -- reading -------------------------------------------------------------------


def last_document(session: Session, terminal_id: str) -> tuple[int, dict[str, Any]] | None:
    """(version, cloud config) of the newest config sent to the terminal."""
    return last_documents(session, [terminal_id]).get(terminal_id)


def last_documents(
    session: Session, terminal_ids: Sequence[str]
) -> dict[str, tuple[int, dict[str, Any]]]:
    """:func:`last_document` of several terminals in one query (terminals
    never configured are absent)."""
    if not terminal_ids:
        return {}
    newest = (
        sa.select(TerminalConfig.terminal_id, sa.func.max(TerminalConfig.version).label("version"))
        .where(TerminalConfig.terminal_id.in_(list(terminal_ids)))
        .group_by(TerminalConfig.terminal_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(TerminalConfig.terminal_id, TerminalConfig.version, TerminalConfig.document).join(
            newest,
            sa.and_(
                newest.c.terminal_id == TerminalConfig.terminal_id,
                newest.c.version == TerminalConfig.version,
            ),
        )
    )
    return {tid: (int(version), dict(doc)) for tid, version, doc in rows}


def terminal_rules(session: Session, terminal_id: str) -> list[AlarmCondition]:
    """The rules the terminal decides (channel rules with a terminal condition)."""
    return list(
        session.scalars(
            sa.select(AlarmCondition)
            .where(
                AlarmCondition.terminal_id == terminal_id,
                AlarmCondition.channel.is_not(None),
                AlarmCondition.cond.in_(TERMINAL_CONDS),
            )
            .order_by(AlarmCondition.channel, AlarmCondition.cond)
        )
    )


def current(session: Session, terminal: Terminal) -> SettingsView:
    stored = last_document(session, terminal.id)
    doc = stored[1] if stored else terminal_config.default_cloud()
    return SettingsView(
        channels=list(terminal.channels),
        rules=terminal_rules(session, terminal.id),
        sampling={str(k): int(v) for k, v in (doc.get("sampling") or {}).items()},
        heartbeat=int(doc.get("heartbeat") or 300),
        upload=int(doc["upload"]) if doc.get("upload") is not None else 60,
        document=stored[1] if stored else None,
        document_version=stored[0] if stored else None,
    )


def sampling_interval(session: Session, terminal_id: str, channel: str, default_s: int) -> int:
    """Seconds between samples of ``channel`` per the config in force (for
    completeness); ``default_s`` when the cloud never set one."""
    stored = last_document(session, terminal_id)
    if stored is None:
        return default_s
    return int((stored[1].get("sampling") or {}).get(channel, default_s))


# -- building ------------------------------------------------------------------


def kinds_of(channels: list[Channel]) -> dict[str, str]:
    """``{name: kind}`` of the channels a config may name: those the terminal
    agent made (``<device>.<point>``)."""
    return {ch.name: ch.kind for ch in channels if "." in ch.name}


def threshold_of(rule: AlarmCondition, now: datetime) -> dict[str, Any]:
    """One ``thresholds`` entry of the cloud config for ``rule``."""
    contact = rule.cond == "contact"

    def level(v: float | None) -> float | int | None:
        if v is None:
            return None
        # A contact state is the integer 0 or 1 on the terminal.
        return int(v) if contact or float(v).is_integer() else float(v)

    entry: dict[str, Any] = {
        "channel": rule.channel,
        "cond": rule.cond,
        "warn": level(rule.warn),
        "alarm": level(rule.alarm),
        "hyst": level(rule.hysteresis) or 0,
        "on_delay": int(rule.on_delay_s),
        "off_delay": int(rule.off_delay_s),
        "count": rule.count,
        "window": rule.window_s,
    }
    until = rule.override_until
    if (
        until is not None
        and until > now
        and (rule.override_warn is not None or rule.override_alarm is not None)
    ):
        entry["override"] = {
            "warn": level(rule.override_warn),
            "alarm": level(rule.override_alarm),
            "until": int(until.timestamp()),
        }
    return {k: v for k, v in entry.items() if v is not None}


def build_document(
    channels: list[Channel],
    rules: list[AlarmCondition],
    *,
    version: int,
    sampling: Mapping[str, int],
    heartbeat: int,
    upload: int,
    now: datetime,
) -> dict[str, Any]:
    """The normalized cloud config (``None`` values left out, as the terminal
    fills them in), or :class:`Invalid` with the validator's message."""
    doc = {
        "version": version,
        "sampling": dict(sampling),
        "thresholds": [threshold_of(r, now) for r in rules if r.enabled],
        "heartbeat": heartbeat,
        "upload": upload,
    }
    kinds = kinds_of(channels)
    try:
        # Disabled rules are not sent, but must be valid too: enabling one later
        # must not produce a config the terminal refuses.
        every_rule = dict(doc, thresholds=[threshold_of(r, now) for r in rules])
        terminal_config.validate_cloud(every_rule, kinds, path="")
        normalized = terminal_config.validate_cloud(doc, kinds, path="")
    except ConfigError as err:
        raise Invalid(
            N_("The terminal would refuse this configuration: %(reason)s"), reason=str(err)
        ) from err
    return _drop_none(normalized)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def config_frame(terminal_id: str, version: int, document: dict[str, Any], now: datetime) -> bytes:
    """The retained config frame's bytes; :class:`Invalid` if it is too large."""
    frame = {
        "type": "config",
        "tid": terminal_id,
        "boot": 0,
        "seq": version & U32_MAX,
        "ts": int(now.timestamp()),
        "unsynced": False,
        "version": version,
        "config": document,
    }
    try:
        return bytes(frames.encode(frame))
    except ProtocolError as err:
        raise Invalid(N_("The configuration cannot be sent: %(reason)s"), reason=str(err)) from err


def next_version(session: Session, terminal: Terminal) -> int:
    stored = last_document(session, terminal.id)
    newest = max(
        terminal.config_version or 0,
        terminal.config_pending_version or 0,
        stored[0] if stored else 0,
    )
    if newest >= U32_MAX:
        raise Invalid(N_("The configuration version space is exhausted."))
    return newest + 1


# -- saving --------------------------------------------------------------------


def _apply_rules(session: Session, terminal: Terminal, inp: SettingsInput, now: datetime) -> None:
    existing = {r.id: r for r in terminal_rules(session, terminal.id)}
    for rule_id, change in inp.rules.items():
        rule = existing.get(rule_id)
        if rule is None:
            raise NotFound(f"rule {rule_id}")
        if change is None:
            session.delete(rule)
            continue
        _set_fields(rule, change, now)
    if inp.new_rule is not None:
        new = inp.new_rule
        if new.channel not in {c.name for c in terminal.channels}:
            raise Invalid(N_("%(channel)s is not a channel of this terminal."), channel=new.channel)
        if any(
            r.channel == new.channel and r.cond == new.cond
            for r in existing.values()
            if r.id not in inp.rules or inp.rules[r.id] is not None
        ):
            raise Invalid(
                N_("A %(cond)s rule for %(channel)s exists already."),
                cond=new.cond,
                channel=new.channel,
            )
        rule = AlarmCondition(terminal_id=terminal.id, channel=new.channel, cond=new.cond)
        _set_fields(rule, new, now)
        session.add(rule)
    session.flush()


def _set_fields(rule: AlarmCondition, change: RuleInput, now: datetime) -> None:
    what = f"{rule.channel} {rule.cond}"
    if (change.count is None) != (change.window_s is None):
        raise Invalid(N_("%(rule)s: count and window go together."), rule=what)
    if change.hysteresis < 0:
        raise Invalid(N_("%(rule)s: the hysteresis must not be negative."), rule=what)
    for name in _RULE_FIELDS:
        if not name.startswith("override_"):
            setattr(rule, name, getattr(change, name))
    if change.override_until is None:
        rule.override_warn = rule.override_alarm = rule.override_until = None
        return
    if change.override_until <= now:
        raise Invalid(N_("%(rule)s: the override must end in the future."), rule=what)
    if change.override_warn is None and change.override_alarm is None:
        raise Invalid(N_("%(rule)s: an override needs a warning or alarm level."), rule=what)
    rule.set_override(change.override_warn, change.override_alarm, change.override_until, now)


def save(
    session: Session,
    viewer: Viewer,
    terminal: Terminal,
    inp: SettingsInput,
    publisher: Publisher,
    *,
    now: datetime,
    ip: str | None,
) -> int | None:
    """Apply ``inp``, push the resulting config and commit (see the module
    docstring). Returns the version published, or None when the config
    would be the same as the last one sent (nothing is published then).

    Raises :class:`Invalid` (nothing saved) when the terminal would refuse
    the config, and :class:`PublishError` (nothing saved) when the broker
    did not take it.
    """
    try:
        lock_terminal(session, terminal)
        session.refresh(terminal)
        _apply_rules(session, terminal, inp, now)
        rules = terminal_rules(session, terminal.id)
        channels = list(terminal.channels)
        version = next_version(session, terminal)
        document = build_document(
            channels,
            rules,
            version=version,
            sampling=inp.sampling,
            heartbeat=inp.heartbeat,
            upload=inp.upload,
            now=now,
        )
        stored = last_document(session, terminal.id)
        if (
            stored is not None
            and _same(stored[1], document)
            and terminal.config_status in ("pending", "applied")
        ):
            # The terminal already has this config: keep the rule rows, push nothing.
            audit.record(
                session,
                viewer,
                "terminal.settings.save",
                "terminal",
                terminal.id,
                at=now,
                ip=ip,
                customer_id=terminal.customer_id,
                details={"pushed": False},
            )
            session.commit()
            return None
        payload = config_frame(terminal.id, version, document, now)
        terminal.push_config(version, now)
        session.add(
            TerminalConfig(
                terminal_id=terminal.id, version=version, document=document, created_at=now
            )
        )
        audit.record(
            session,
            viewer,
            PUSH_ACTION,
            "terminal",
            terminal.id,
            at=now,
            ip=ip,
            customer_id=terminal.customer_id,
            details={"version": version, "config": document, "bytes": len(payload)},
        )
        session.flush()
        publisher.publish(topics.downlink(terminal.id, "config"), payload, retain=True, qos=1)
        session.commit()
        return version
    except (Invalid, NotFound, PublishError):
        session.rollback()
        raise


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "version"} == {
        k: v for k, v in b.items() if k != "version"
    }
