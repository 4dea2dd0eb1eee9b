"""Parsing the terminal settings form into :class:`~cloud.services.configs.SettingsInput`.

The page posts one group of fields per rule; this turns their strings into
typed values and names the field in every error, before anything is saved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cloud.services.configs import TERMINAL_CONDS, RuleInput, SettingsInput
from cloud.services.errors import N_, Invalid, NotFound
from protocol import config as terminal_config

_RULE_FIELD = re.compile(r"rule-(\d+)-")


def parse_form(
    form: Mapping[str, str], rule_ids: list[int], channels: list[str], zone: Any
) -> SettingsInput:
    """Turn the settings form's fields into a :class:`SettingsInput`.

    Fields: ``rule-<id>-<field>`` per existing rule (``rule-<id>-delete``
    removes it), ``new-channel``/``new-cond``/``new-<field>`` for a new rule
    (ignored while ``new-channel`` is empty), ``sampling-<channel>``,
    ``heartbeat`` and ``upload``. Override ends are local times in ``zone``.
    Raises :class:`Invalid` naming the field.
    """
    named = {int(m.group(1)) for m in map(_RULE_FIELD.match, form) if m}
    foreign = named - set(rule_ids)
    if foreign:
        # A rule id of another terminal (or customer) is "not found", as in a URL.
        raise NotFound(f"rule {min(foreign)}")
    rules: dict[int, RuleInput | None] = {}
    for rid in rule_ids:
        prefix = f"rule-{rid}-"
        if form.get(prefix + "delete"):
            rules[rid] = None
        elif any(k.startswith(prefix) for k in form):
            rules[rid] = _rule(form, prefix, "", "", zone)
    new_rule = None
    if form.get("new-channel"):
        cond = form.get("new-cond", "")
        if cond not in TERMINAL_CONDS:
            raise Invalid(N_("Unknown condition %(cond)s."), cond=cond)
        new_rule = _rule(form, "new-", form["new-channel"], cond, zone)
    sampling = {}
    for name in channels:
        raw = form.get(f"sampling-{name}", "").strip()
        if raw:
            sampling[name] = _int(raw, f"sampling-{name}", 1, 86400)
    heartbeat = _int(form.get("heartbeat", "300"), "heartbeat", 10, 86400)
    upload = _int(form.get("upload", "60"), "upload", 0, 86400)
    return SettingsInput(rules, new_rule, sampling, heartbeat, upload)


def _rule(form: Mapping[str, str], prefix: str, channel: str, cond: str, zone: Any) -> RuleInput:
    def num(name: str) -> float | None:
        raw = form.get(prefix + name, "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError as err:
            raise Invalid(
                N_("%(field)s: %(value)s is not a number."), field=prefix + name, value=raw
            ) from err
        if not math.isfinite(value):
            raise Invalid(
                N_("%(field)s: %(value)s is not a number."), field=prefix + name, value=raw
            )
        return value

    def opt_int(name: str, lo: int, hi: int) -> int | None:
        raw = form.get(prefix + name, "").strip()
        return None if not raw else _int(raw, prefix + name, lo, hi)

    until_raw = form.get(prefix + "override_until", "").strip()
    until = None
    if until_raw:
        try:
            until = datetime.fromisoformat(until_raw).replace(tzinfo=zone).astimezone(UTC)
        except ValueError as err:
            raise Invalid(
                N_("%(field)s: %(value)s is not a date and time."),
                field=prefix + "override_until",
                value=until_raw,
            ) from err
    return RuleInput(
        channel=channel,
        cond=cond,
        warn=num("warn"),
        alarm=num("alarm"),
        hysteresis=num("hysteresis") or 0.0,
        on_delay_s=opt_int("on_delay_s", 0, terminal_config.MAX_DELAY) or 0,
        off_delay_s=opt_int("off_delay_s", 0, terminal_config.MAX_DELAY) or 0,
        count=opt_int("count", 1, terminal_config.MAX_COUNT),
        window_s=opt_int("window_s", 1, terminal_config.MAX_WINDOW),
        enabled=bool(form.get(prefix + "enabled")),
        override_warn=num("override_warn") if until else None,
        override_alarm=num("override_alarm") if until else None,
        override_until=until,
    )


def _int(raw: str, name: str, lo: int, hi: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError as err:
        raise Invalid(
            N_("%(field)s: %(value)s is not a whole number."), field=name, value=raw
        ) from err
    if not lo <= value <= hi:
        raise Invalid(
            N_("%(field)s: %(value)s is not within %(lo)s..%(hi)s."),
            field=name,
            value=value,
            lo=lo,
            hi=hi,
        )
    return value
