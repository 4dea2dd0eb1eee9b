"""Template filters, labels and the language choice of the web site.

Times are always shown with their zone named (``2026-11-27 14:03 JST``) in
the viewer's zone: the customer's for customer users, the site default for
staff. Condition, severity and event names come from the notifier's tables,
so mail and pages use the same words.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import numbers
from flask import Flask, request, session
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup, escape

from cloud.http import context
from cloud.notify.render import COND_LABELS, EVENT_LABELS, SEVERITY_LABELS
from cloud.services.labels import Label
from cloud.services.scope import (
    ACKNOWLEDGE,
    BILLING,
    CONFIGURE,
    MANAGE_TARGETS,
    OPERATE,
    PROVISION,
    TEAM,
)
from cloud.timeseries import Point

LANGUAGES = ("ja", "en")

ROLE_LABELS = {
    "operator": _l("Operator"),
    "installer": _l("Installer"),
    "customer_admin": _l("Customer administrator"),
    "customer_viewer": _l("Customer viewer"),
}
CONNECTIVITY_LABELS = {
    "unknown": _l("never connected"),
    "online": _l("online"),
    "offline": _l("offline"),
}
TERMINAL_STATUS_LABELS = {
    "active": _l("in service"),
    "suspended": _l("suspended"),
    "decommissioned": _l("decommissioned"),
}
CONFIG_LABELS = {
    "none": _l("no configuration sent"),
    "pending": _l("pending"),
    "applied": _l("applied"),
    "rejected": _l("rejected"),
}
STATE_LABELS = {
    "raised": _l("raised"),
    "acknowledged": _l("acknowledged"),
    "cleared": _l("cleared"),
}
COMMAND_LABELS = {
    "sample_now": _l("Sample now"),
    "rebirth": _l("Announce channels again (rebirth)"),
    "resync_clock": _l("Resync clock"),
    "reboot": _l("Reboot"),
    "ota": _l("Firmware update offer"),
    "ota_cancel": _l("Firmware update withdrawn"),
}
COMMAND_STATE_LABELS = {
    "queued": _l("queued"),
    "delivered": _l("delivered, waiting for the answer"),
    "succeeded": _l("done"),
    "failed": _l("failed"),
    "timed_out": _l("timed out"),
}
OTA_STATE_LABELS = {
    "pending": _l("waiting for its wave"),
    "offered": _l("offered"),
    "downloading": _l("downloading"),
    "verifying": _l("verifying"),
    "installed": _l("installed, restarting"),
    "confirmed": _l("confirmed"),
    "rolled_back": _l("rolled back"),
    "failed": _l("failed"),
    "running": _l("running"),
    "paused": _l("paused"),
    "done": _l("done"),
    "cancelled": _l("cancelled"),
}
PARKED_LABELS = {
    "not_contracted": _l("outside the contract"),
    "no_birth": _l("waiting for its birth frame"),
    "held_over_limit": _l("held over the terminal's limit"),
}
FLEET_STATUS_LABELS = {
    "alarm": _l("Alarm"),
    "warning": _l("Warning"),
    "offline": _l("Offline"),
    "sensor": _l("Sensor trouble"),
    "new": _l("Never connected"),
    "normal": _l("Normal"),
    "inactive": _l("Out of service"),
}
# A sensor profile's status as the terminal's birth says it (cloud.services.sensors);
# "documented" is the unmarked normal case.
PROFILE_LABELS = {
    "reference": _l("reference profile"),
    "test": _l("test device"),
    "site": _l("site profile"),
}
PROFILE_HINTS = {
    "reference": _l(
        "Reference profile: its register map is not a manufacturer's published map. It "
        "stands in for this class of device until a published map is verified; check the "
        "readings against the device before relying on them."
    ),
    "test": _l(
        "Test device: an invented register map for tests and the demo. No such product exists."
    ),
    "site": _l(
        "Site profile: a register map added at the site by the installer, not one shipped "
        "with mimamori."
    ),
}
UNKNOWN_PROFILE_HINT = _l("This profile's register map is not marked as a published map.")
DELIVERY_LABELS = {
    "queued": _l("queued"),
    "sent": _l("sent"),
    "failed": _l("failed, will retry"),
    "dead": _l("gave up"),
    "sending": _l("sending"),
}


def select_locale() -> str:
    """The user's language; before login the one chosen on the page, else the
    browser's preference, else the site default."""
    u: Any = current_user
    if u and u.is_authenticated:
        return str(u.language)
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return str(chosen)
    best = request.accept_languages.best_match(LANGUAGES)
    return best or context.ctx().settings.default_language


def local_time(
    value: datetime | None, fmt: str = "%Y-%m-%d %H:%M", zone: ZoneInfo | None = None
) -> str:
    """``2026-11-27 14:03 JST``: the time in the viewer's zone, zone named."""
    if value is None:
        return "—"
    local = value.astimezone(zone or context.zone())
    return f"{local.strftime(fmt)} {local.tzname()}"


@lru_cache(maxsize=8)
def _separators(locale: str) -> tuple[str, str]:
    """(group, decimal) symbols of ``locale``."""
    return numbers.get_group_symbol(locale), numbers.get_decimal_symbol(locale)


def register(app: Flask) -> None:
    """Filters and globals every template uses."""

    def lang() -> str:
        return select_locale()

    def cond_label(cond: str | None) -> str:
        return COND_LABELS.get(lang(), {}).get(cond or "", cond or "")

    def severity_label(severity: object) -> str:
        return SEVERITY_LABELS.get(lang(), {}).get(str(severity), str(severity))

    def event_label(event: str) -> str:
        return EVENT_LABELS.get(lang(), {}).get(event, event)

    def value(v: float | None) -> str:
        """Up to three decimals, grouped (``#,##0.###``), in the page's language."""
        if v is None:
            return "—"
        # str.format rather than babel's format_decimal: a page of the fleet
        # shows hundreds of values and babel took 60 µs for each.
        text = f"{v:,.3f}".rstrip("0").rstrip(".")
        if text == "-0":
            text = "0"
        group, decimal = _separators(str(get_locale()))
        if (group, decimal) != (",", "."):
            text = text.replace(",", "\0").replace(".", decimal).replace("\0", group)
        return text

    def plain(v: float | int | None) -> str:
        """A number for an input field: no grouping, no trailing zeros."""
        return "" if v is None else f"{v:.12g}"

    def local_input(v: datetime | None) -> str:
        """A datetime-local input's value in the viewer's zone."""
        return "" if v is None else v.astimezone(context.zone()).strftime("%Y-%m-%dT%H:%M")

    def shown(lb: Label, point: Point | float | None) -> str:
        """A channel's value without its unit: a contact's state name (its
        label, else on/off), else the number."""
        v = point.value if isinstance(point, Point) else point
        if v is None:
            return "—"
        if lb.is_contact:
            return lb.state(v) or (gettext("on") if v else gettext("off"))
        return value(v)

    def reading(lb: Label, point: Point | float | None) -> Markup:
        """:func:`shown` and the unit (in a ``span.unit``)."""
        text = shown(lb, point)
        if lb.is_contact or not lb.unit or text == "—":
            return escape(text)
        return Markup('%s <span class="unit">%s</span>') % (text, lb.unit)

    def day(v: date | datetime | str | None) -> str:
        """A date as the date inputs show it (``2026/12/06`` in Japanese);
        text (a query argument) as it was typed."""
        if v is None or isinstance(v, str):
            return v or ""
        if isinstance(v, datetime):
            v = v.astimezone(context.zone()).date()
        return v.strftime(gettext("%Y-%m-%d"))

    def graph_text() -> dict[str, str]:
        """The words graph.js writes (legend, level labels, notes under a graph)."""
        return {
            "min": gettext("min"),
            "mean": gettext("mean"),
            "max": gettext("max"),
            "empty": gettext("No data in this range."),
            "warning": severity_label("warning"),
            "alarm": severity_label("alarm"),
            "warningLevel": gettext("warning level"),
            "alarmLevel": gettext("alarm level"),
            "raised": gettext("raised at"),
            "cleared": gettext("cleared at"),
            "late": gettext("samples that arrived late (circled):"),
            "bucket": gettext("each point summarises"),
            "time": gettext("Time"),
        }

    def percent(v: float | None) -> str:
        return "—" if v is None else f"{v * 100:.1f} %"

    def label(table: dict[str, Any]) -> Any:
        return lambda v: str(table.get(str(v), v))

    app.jinja_env.filters.update(
        local=local_time,
        cond=cond_label,
        severity=severity_label,
        event=event_label,
        value=value,
        percent=percent,
        reading=reading,
        day=day,
        shown=shown,
        fleet_status=label(FLEET_STATUS_LABELS),
        plain=plain,
        local_input=local_input,
        connectivity=label(CONNECTIVITY_LABELS),
        config_status=label(CONFIG_LABELS),
        state=label(STATE_LABELS),
        delivery=label(DELIVERY_LABELS),
    )
    app.jinja_env.globals["role_label"] = label(ROLE_LABELS)
    app.jinja_env.globals["graph_text"] = graph_text
    app.jinja_env.globals["terminal_status_label"] = label(TERMINAL_STATUS_LABELS)
    app.jinja_env.globals["parked_label"] = label(PARKED_LABELS)
    app.jinja_env.globals["command_label"] = label(COMMAND_LABELS)
    app.jinja_env.globals["command_state_label"] = label(COMMAND_STATE_LABELS)
    app.jinja_env.globals["ota_state_label"] = label(OTA_STATE_LABELS)
    app.jinja_env.globals["profile_label"] = label(PROFILE_LABELS)
    app.jinja_env.globals["profile_hint"] = lambda v: str(
        PROFILE_HINTS.get(str(v), UNKNOWN_PROFILE_HINT)
    )

    @app.context_processor
    def globals_() -> dict[str, Any]:
        u: Any = current_user
        role = u.role if u and u.is_authenticated else None
        return {
            "lang": lang(),
            "languages": LANGUAGES,
            "can": {
                "configure": role in CONFIGURE,
                "targets": role in MANAGE_TARGETS,
                "ack": role in ACKNOWLEDGE,
                "provision": role in PROVISION,
                "operate": role in OPERATE,
                "billing": role in BILLING,
                "team": role in TEAM,
            },
        }
