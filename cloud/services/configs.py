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

A config still pending after a deadline is published again by
:func:`repush_due` (the ingest runs it periodically): a broker that lost its
retained messages (replaced, restored from an old state) would otherwise
leave the terminal on its old config for good. See :func:`repush_due` for
the backoff.

The cloud does not know the terminal's wiring, only the channels its birth
frame announced (``<device>.<point>`` names with their kinds), so the
validator gets those channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.alarms.engine import lock_terminal
from cloud.models import (
    AlarmCondition,
    Channel,
    ConfigStatus,
    Terminal,
    TerminalConfig,
    TerminalStatus,
)
from cloud.services import audit
from cloud.services.errors import N_, Invalid, NotFound, PublishError
from cloud.services.publisher import Publisher
from cloud.services.scope import Viewer
from protocol import config as terminal_config
from protocol import frames, topics
from protocol.errors import ConfigError, ProtocolError

PUSH_ACTION = "terminal.config.push"
REPUSH_ACTION = "terminal.config.repush"
REPUSH_ACTOR = "system"
REPUSH_BATCH = 200  # terminals looked at per pass; the next pass takes the rest
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


# -- re-pushing unacknowledged configs -----------------------------------------


@dataclass(frozen=True)
class RepushPolicy:
    """When a pending config is published again.

    The first re-push comes ``deadline`` after the config was published; the
    n-th (n >= 2) ``deadline * 2**(n-1)`` after the previous one, at most
    ``max_interval``, and only if the terminal was heard from since the
    previous re-push: a terminal that stays away finds the retained config
    when it connects, so publishing it again only repeats what the broker
    holds. Raises ``ValueError`` for a deadline under one second or a
    ``max_interval`` below it.
    """

    deadline: timedelta
    max_interval: timedelta

    def __post_init__(self) -> None:
        if self.deadline < timedelta(seconds=1):
            raise ValueError(f"deadline {self.deadline} is under one second")
        if self.max_interval < self.deadline:
            raise ValueError(f"max_interval {self.max_interval} is below the deadline")

    def interval(self, n: int) -> timedelta:
        """Wait between re-push ``n - 1`` and re-push ``n`` (n >= 2)."""
        # 2**20 deadlines is far beyond any max_interval; avoids huge ints.
        return min(self.deadline * (2 ** min(max(n - 1, 0), 20)), self.max_interval)

    def due(
        self,
        *,
        pending_since: datetime | None,
        repushes: int,
        repushed_at: datetime | None,
        last_seen_at: datetime | None,
        now: datetime,
    ) -> bool:
        if pending_since is None or now - pending_since < self.deadline:
            return False
        if repushes == 0 or repushed_at is None:
            return True
        heard_since = last_seen_at is not None and last_seen_at > repushed_at
        return heard_since and now - repushed_at >= self.interval(repushes + 1)


@dataclass
class RepushResult:
    """What one pass did: terminals re-pushed, and the publish error that
    stopped it (the broker is then unreachable for the others too)."""

    repushed: list[str] = field(default_factory=list)
    error: str | None = None


def repush_due(
    session: Session,
    publisher: Publisher,
    policy: RepushPolicy,
    *,
    now: datetime,
    limit: int = REPUSH_BATCH,
) -> RepushResult:
    """Publish again, retained, the pending config of every terminal in
    service that :meth:`RepushPolicy.due` names, the stored document with
    its version unchanged (the terminal answers a redelivery of the config
    it runs with "unchanged", which the ingest takes as the ack).

    Each terminal in its own transaction: a conditional update claims the
    re-push (the count it read must still be there, so two ingest workers
    running this at once publish it once), the audit entry
    ``terminal.config.repush`` (actor ``system``) is added, the frame is
    published, then it commits; a failed publish rolls that terminal back
    and ends the pass (:attr:`RepushResult.error`). Never raises for a
    publish failure; database errors propagate.
    """
    result = RepushResult()
    rows = session.execute(
        sa.select(
            Terminal.id,
            Terminal.customer_id,
            Terminal.config_pending_version,
            Terminal.config_status_at,
            Terminal.config_repushes,
            Terminal.config_repushed_at,
            Terminal.last_seen_at,
        )
        .where(
            Terminal.status == TerminalStatus.ACTIVE,
            Terminal.config_status == ConfigStatus.PENDING,
            Terminal.config_pending_version.is_not(None),
            Terminal.config_status_at <= now - policy.deadline,
            sa.or_(
                Terminal.config_repushed_at.is_(None),
                Terminal.config_repushed_at <= now - policy.deadline,
            ),
        )
        .order_by(Terminal.config_status_at, Terminal.id)
        .limit(limit)
    ).all()
    session.rollback()  # end the read; each re-push is its own transaction
    for tid, customer_id, version, since, repushes, repushed_at, seen in rows:
        if not policy.due(
            pending_since=since,
            repushes=repushes,
            repushed_at=repushed_at,
            last_seen_at=seen,
            now=now,
        ):
            continue
        stored = last_document(session, tid)
        if stored is None or stored[0] != version:
            session.rollback()  # pending without its document: nothing to send
            continue
        claimed = session.execute(
            sa.update(Terminal)
            .where(
                Terminal.id == tid,
                Terminal.config_status == ConfigStatus.PENDING,
                Terminal.config_pending_version == version,
                Terminal.config_repushes == repushes,
            )
            .values(config_repushes=repushes + 1, config_repushed_at=now)
            .returning(Terminal.id)
            .execution_options(synchronize_session=False)
        ).scalar()
        if claimed is None:  # acked meanwhile, or another worker took it
            session.rollback()
            continue
        payload = config_frame(tid, version, stored[1], now)
        audit.record(
            session,
            None,
            REPUSH_ACTION,
            "terminal",
            tid,
            at=now,
            ip=None,
            customer_id=customer_id,
            actor=REPUSH_ACTOR,
            details={
                "version": version,
                "repush": repushes + 1,
                "pending_since": since.isoformat() if since else None,
                "bytes": len(payload),
            },
        )
        session.flush()
        try:
            publisher.publish(topics.downlink(tid, "config"), payload, retain=True, qos=1)
        except PublishError as err:
            session.rollback()
            result.error = f"{tid}: {err}"
            return result
        session.commit()
        result.repushed.append(tid)
    return result
