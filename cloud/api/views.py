"""The REST API's views: parse the request, call the same services the
pages use (:mod:`cloud.services`), shape JSON. No business rules here.

Lists page with ``?limit=`` (1..200, default 50) and an opaque ``cursor``:
the response holds ``next_cursor`` (null on the last page) and a ``Link:
<...>; rel="next"`` header. Times are ISO 8601 UTC on output; ranges of
samples are given as epoch seconds (``start`` inclusive, ``end`` exclusive).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError

from cloud.api import auth, errors, openapi
from cloud.api.errors import BadRequest, Unauthorized
from cloud.http import context as c
from cloud.models import (
    Alarm,
    AlarmCondition,
    AlarmState,
    Channel,
    Customer,
    DeliveryChannel,
    ForwardingEndpoint,
    MaintenanceWindow,
    NotificationTarget,
    OtaBundle,
    OtaRollout,
    OtaTarget,
    Severity,
    Terminal,
    TerminalCommand,
    User,
)
from cloud.services import (
    admin,
    alarms,
    commands,
    configs,
    forwarding,
    labels,
    maintenance,
    ota,
    parking,
    reports,
    sensors,
    series,
    targets,
    twofactor,
)
from cloud.services.errors import Forbidden, NotFound
from cloud.services.scope import CONFIGURE, Viewer, get_scoped, require, scoped

bp = Blueprint("api", __name__, url_prefix=errors.PREFIX, template_folder="templates")
errors.install(bp)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_SAMPLES = 5000
MAX_POINTS = 2000
INT_LIMIT = 2**31 - 1
MAX_TEXT = 10_000
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
T = TypeVar("T")


# -- request helpers -----------------------------------------------------------

_RULE_PARAM = re.compile(r"<(?:\w+:)?(\w+)>")


@bp.before_request
def refuse_unknown_query_parameters() -> None:
    """A misspelt filter (``?stat=open``) would otherwise be ignored silently
    and return everything; the document lists what each operation takes."""
    if request.url_rule is None or not request.args:
        return
    path = _RULE_PARAM.sub(r"{\1}", request.url_rule.rule)[len(errors.PREFIX) :]
    operation = openapi.PATHS.get(path, {}).get(request.method.lower(), {})
    known = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    unknown = sorted(set(request.args) - known)
    if unknown:
        raise BadRequest(
            "unknown query parameter(s): " + ", ".join(unknown)[:200], "unknown_parameter"
        )


def viewer() -> Viewer:
    return auth.bearer(c.db(), c.now())


def json_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def field(
    data: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    default: Any = None,
    *,
    required: bool = False,
    nullable: bool = True,
    max_length: int = MAX_TEXT,
) -> Any:
    """``data[name]`` checked against ``kind`` (bool is never accepted as a number).

    Text longer than ``max_length`` (the document's ``maxLength``) or holding
    control characters other than tab and newlines is refused: PostgreSQL
    cannot store NUL, and no name, address or comment needs them."""
    if name not in data:
        if required:
            raise BadRequest(f"{name} is required", "invalid_field")
        return default
    value = data[name]
    if value is None and nullable and not required:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"{name} has the wrong type", "invalid_field")
    if not isinstance(value, kinds):
        raise BadRequest(f"{name} has the wrong type", "invalid_field")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"{name} is not a finite number", "invalid_field")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not (-INT_LIMIT <= value <= INT_LIMIT)
    ):
        # Ids and seconds are 32-bit columns on PostgreSQL; SQLite overflows at 64.
        raise BadRequest(f"{name} is out of range", "invalid_field")
    if isinstance(value, str):
        if len(value) > max_length:
            raise BadRequest(f"{name} is longer than {max_length} characters", "invalid_field")
        if CONTROL.search(value):
            raise BadRequest(f"{name} contains control characters", "invalid_field")
    return value


def ident(value: int) -> int:
    """A database id from the URL; one no row can have is simply not found."""
    if not 1 <= value <= INT_LIMIT:
        raise NotFound(f"id {value}")
    return value


def int_arg(name: str, default: int | None, lo: int, hi: int) -> int | None:
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", "invalid_parameter") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be within {lo}..{hi}", "invalid_parameter")
    return value


def encode_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def cursor_arg(convert: Callable[[str], T]) -> T | None:
    text = request.args.get("cursor")
    if not text:
        return None
    try:
        raw = base64.b64decode(
            text + "=" * (-len(text) % 4), altchars=b"-_", validate=True
        ).decode()
        if encode_cursor(raw) != text:  # only cursors this API made
            raise ValueError(text)
        return convert(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("the cursor is not one this API gave out", "invalid_cursor") from None


def page(items: list[Any], next_key: object | None) -> Response:
    """A list response with ``next_cursor`` and a ``Link`` header for the next page."""
    cursor = None if next_key is None else encode_cursor(next_key)
    response = jsonify({"items": items, "next_cursor": cursor})
    if cursor is not None:
        args = {k: v for k, v in request.args.items() if k != "cursor"}
        args["cursor"] = cursor
        response.headers["Link"] = f'<{request.base_url}?{urlencode(args)}>; rel="next"'
    return response


def iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def scoped_terminal(tid: str) -> tuple[Viewer, Terminal]:
    who = viewer()
    return who, get_scoped(c.db(), who, Terminal, tid)


# -- shapes --------------------------------------------------------------------


def terminal_json(t: Terminal) -> dict[str, Any]:
    return {
        "id": t.id,
        "customer_id": t.customer_id,
        "name": t.name,
        "site_address": t.site_address,
        "connectivity": str(t.connectivity),
        "last_seen_at": iso(t.last_seen_at),
        "firmware_version": t.firmware_version,
        "config_status": str(t.config_status),
        "config_version": t.config_version,
        "provisioned": t.credential_hash is not None,
        "status": str(t.status),
        "registered_on": _day(t.registered_on),
        "contract_start": _day(t.contract_start),
        "contract_end": _day(t.contract_end),
        "cancellation_notice_on": _day(t.cancellation_notice_on),
        "sensors": _sensors(t),
    }


def _sensors(t: Terminal) -> list[dict[str, Any]] | None:
    """The birth's devices with ``documented`` spelled out: false marks a map
    that is not a manufacturer's published one (reference, test, site)."""
    found = sensors.of_terminal(t)
    if found is None:
        return None
    return [
        {"name": s.name, "model": s.model, "status": s.status, "documented": s.documented}
        for s in found
    ]


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


CONTRACT_FIELDS = ("contract_start", "contract_end", "cancellation_notice_on")


def date_field(data: dict[str, Any], name: str, default: date | None) -> date | None:
    """An ISO calendar date (``YYYY-MM-DD``) or null; ``default`` when absent."""
    if name not in data:
        return default
    text = field(data, name, str, max_length=10)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD", "invalid_field") from None


def channel_json(ch: Channel, lb: labels.Label) -> dict[str, Any]:
    return {
        "alias": ch.alias,
        "name": ch.name,
        "unit": ch.unit,
        "kind": ch.kind,
        "display_name": lb.display_name,
        "state_off": lb.state_off if lb.is_contact else None,
        "state_on": lb.state_on if lb.is_contact else None,
        "key": lb.key,
    }


def alarm_json(a: Alarm, name: Callable[[str, str | None], str]) -> dict[str, Any]:
    """``name`` is a :func:`cloud.services.labels.names` lookup covering the alarm."""
    return {
        "id": a.id,
        "terminal_id": a.terminal_id,
        "channel": a.channel,
        "channel_label": name(a.terminal_id, a.channel) or None,
        "cond": a.cond,
        "severity": str(a.severity),
        "state": str(a.state),
        "raised_at": iso(a.raised_at),
        "acked_at": iso(a.acked_at),
        "ack_comment": a.ack_comment,
        "cleared_at": iso(a.cleared_at),
        "value": a.value,
        "threshold": a.threshold,
        "historical": bool(a.historical),
        "muted": bool(a.muted),  # raised in a maintenance window: nobody was paged
    }


def rule_json(r: AlarmCondition) -> dict[str, Any]:
    return {
        "id": r.id,
        "channel": r.channel,
        "cond": r.cond,
        "warn": r.warn,
        "alarm": r.alarm,
        "hysteresis": r.hysteresis,
        "on_delay_s": r.on_delay_s,
        "off_delay_s": r.off_delay_s,
        "count": r.count,
        "window_s": r.window_s,
        "enabled": bool(r.enabled),
        "override_warn": r.override_warn,
        "override_alarm": r.override_alarm,
        "override_until": iso(r.override_until),
    }


def target_json(t: NotificationTarget) -> dict[str, Any]:
    return {
        "id": t.id,
        "customer_id": t.customer_id,
        "channel": str(t.channel),
        # Chat addresses carry the service's tokens: shown masked, as on the site.
        "address": targets.shown_addresses([t]).get(t.id, t.address),
        "terminal_id": t.terminal_id,
        "cond": t.cond,
        "channel_name": t.channel_name,
        "min_severity": str(t.min_severity),
        "language": t.language,
        "notify_recovery": bool(t.notify_recovery),
        "enabled": bool(t.enabled),
    }


# -- document, identity, token -------------------------------------------------


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document(request.host_url.rstrip("/") + errors.PREFIX))


@bp.get("/me")
def me() -> dict[str, Any]:
    who = viewer()
    return {
        "user_id": who.user_id,
        "email": who.email,
        "role": str(who.role),
        "customer_id": who.customer_id,
    }


def _session_viewer() -> Viewer:
    """The logged-in site user of a token action: session cookie AND the CSRF
    token (``X-CSRFToken`` header, or the form's ``csrf_token`` field). These
    are the only API routes that look at the session, because they are how a
    token comes to exist."""
    try:
        validate_csrf(request.headers.get("X-CSRFToken") or request.form.get("csrf_token", ""))
    except (ValidationError, CSRFError) as err:
        raise BadRequest("missing or invalid CSRF token", "csrf") from err
    if not current_user.is_authenticated:
        raise Unauthorized("log in to the site first")
    return c.viewer()


def _second_factor(code: str) -> bool:
    """True if ``code`` is a good TOTP or recovery code of the logged-in user
    (throttled and audited as a login's second step)."""
    try:
        twofactor.check_login(
            c.db(),
            c.ctx().throttle,
            c.user(),
            code,
            ip=c.client_ip(),
            now=c.now(),
            known_device=True,
        )
    except twofactor.CodeRefused:
        return False
    return True


def _token_page(
    token: str | None, error: str | None = None, code: int = 200
) -> tuple[str, int, dict[str, str]]:
    user = c.user()
    html = render_template(
        "api/token.html",
        token=token,
        has_token=user.api_token_hash is not None,
        created=user.api_token_created_at,
        expires=user.api_token_expires_at,
        last_used=user.api_token_last_used_at,
        two_factor=user.two_factor,
        error=error,
    )
    return html, code, {"Cache-Control": "no-store"}


@bp.get("/token")
def token_page() -> Any:
    """A small page of the site for making and revoking one's token."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login", next=request.path))
    return _token_page(None)


@bp.post("/token")
def create_token() -> Any:
    """Make a token. The password is asked for again (``password`` in the
    JSON body or the form): a session left open is not enough to mint a
    credential that outlives it."""
    who = _session_viewer()
    from_page = "csrf_token" in request.form
    data = request.get_json(silent=True) if request.is_json else None
    password = (data or {}).get("password") if isinstance(data, dict) else None
    if from_page:
        password = request.form.get("password")
    if not isinstance(password, str) or not c.ctx().passwords.verify(
        c.user().password_hash, password
    ):
        if from_page:
            return _token_page(None, gettext("The password is wrong."), 403)
        raise Forbidden("the password is wrong or missing")
    if c.user().two_factor:
        # A token outlives the session: with two factors, both are asked again.
        code = request.form.get("code") if from_page else (data or {}).get("code")
        if not isinstance(code, str) or not _second_factor(code):
            if from_page:
                return _token_page(None, gettext("The code is wrong or was used already."), 403)
            raise Forbidden("the two-step login code is wrong, used or missing")
    lifetime = timedelta(days=c.ctx().web.api_token_max_age_days)
    token = auth.issue(c.db(), who, who.user_id, now=c.now(), ip=c.client_ip(), lifetime=lifetime)
    if from_page:  # the page's form: show it on the page
        return _token_page(token)
    return {"token": token}, 201, {"Cache-Control": "no-store"}


@bp.delete("/token")
def revoke_token() -> tuple[str, int]:
    who = _session_viewer()
    auth.revoke(c.db(), who, who.user_id, now=c.now(), ip=c.client_ip())
    return "", 204


@bp.post("/token/revoke")
def revoke_token_form() -> Any:
    who = _session_viewer()
    auth.revoke(c.db(), who, who.user_id, now=c.now(), ip=c.client_ip())
    return redirect(url_for("api.token_page"))


@bp.after_request
def no_store(response: Response) -> Response:
    # Answers hold customer data: never keep them in shared caches.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# -- terminals, channels, samples -----------------------------------------------


@bp.get("/terminals")
def list_terminals() -> Response:
    who = viewer()
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    after = cursor_arg(str)
    stmt = scoped(who, Terminal).order_by(Terminal.id)
    if after is not None:
        stmt = stmt.where(Terminal.id > after)
    rows = list(c.db().scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return page([terminal_json(t) for t in rows], rows[-1].id if more else None)


@bp.post("/terminals")
def register_terminal() -> tuple[dict[str, Any], int, dict[str, str]]:
    who = viewer()
    data = json_body()
    tid = field(data, "id", str, required=True)
    inp = admin.TerminalInput(
        name=field(data, "name", str, "", max_length=200) or "",
        customer_id=field(data, "customer_id", int),
        site_address=field(data, "site_address", str, "") or "",
        registered_on=c.now().date(),
        **{name: date_field(data, name, None) for name in CONTRACT_FIELDS},
    )
    terminal = admin.save_terminal(
        c.db(), who, tid, inp, create=True, now=c.now(), ip=c.client_ip()
    )
    return terminal_json(terminal), 201, {"Location": url_for("api.get_terminal", tid=terminal.id)}


@bp.get("/terminals/<tid>")
def get_terminal(tid: str) -> dict[str, Any]:
    return terminal_json(scoped_terminal(tid)[1])


@bp.patch("/terminals/<tid>")
def change_terminal(tid: str) -> dict[str, Any]:
    """Fields left out keep their value; contract dates are changed here."""
    who, t = scoped_terminal(tid)
    data = json_body()
    inp = admin.TerminalInput(
        name=field(data, "name", str, t.name, max_length=200) or "",
        customer_id=field(data, "customer_id", int, t.customer_id),
        site_address=field(data, "site_address", str, t.site_address) or "",
        registered_on=t.registered_on,
        **{name: date_field(data, name, getattr(t, name)) for name in CONTRACT_FIELDS},
    )
    terminal = admin.save_terminal(
        c.db(), who, t.id, inp, create=False, now=c.now(), ip=c.client_ip()
    )
    return terminal_json(terminal)


@bp.post("/terminals/<tid>/status")
def set_terminal_status(tid: str) -> dict[str, Any]:
    who, t = scoped_terminal(tid)
    data = json_body()
    terminal = admin.set_status(
        c.db(),
        who,
        t.id,
        field(data, "status", str, required=True, max_length=32),
        reason=field(data, "reason", str, "", max_length=500) or "",
        now=c.now(),
        ip=c.client_ip(),
    )
    return terminal_json(terminal)


def command_json(cmd: TerminalCommand) -> dict[str, Any]:
    return {
        "id": cmd.id,
        "terminal_id": cmd.terminal_id,
        "name": cmd.name,
        "args": cmd.args,
        "state": cmd.state_at(c.now()),
        "requested_at": iso(cmd.requested_at),
        "requested_by": cmd.requested_by,
        "delivered_at": iso(cmd.delivered_at),
        "answered_at": iso(cmd.answered_at),
        "expires_at": iso(cmd.expires_at),
        "ok": cmd.ok,
        "result": cmd.result,
        "error": cmd.error or None,
    }


@bp.get("/terminals/<tid>/commands")
def list_commands(tid: str) -> dict[str, Any]:
    """The terminal's newest commands first (at most 50)."""
    items = commands.recent(c.db(), viewer(), tid, limit=DEFAULT_LIMIT)
    return {"items": [command_json(cmd) for cmd in items]}


@bp.post("/terminals/<tid>/commands")
def send_command(tid: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    who = viewer()
    data = json_body()
    name = field(data, "name", str, required=True, max_length=32)
    args = field(data, "args", dict, None)
    cmd = commands.send(
        c.db(), who, tid, name, args, publisher=c.publisher(), now=c.now(), ip=c.client_ip()
    )
    location = url_for("api.get_command", tid=cmd.terminal_id, command_id=cmd.id)
    return command_json(cmd), 201, {"Location": location}


@bp.get("/terminals/<tid>/commands/<int:command_id>")
def get_command(tid: str, command_id: int) -> dict[str, Any]:
    return command_json(commands.get(c.db(), viewer(), tid, command_id))


# -- over-the-air updates (docs/ota.md; operators only) -----------------------


def bundle_json(b: OtaBundle) -> dict[str, Any]:
    return {
        "id": b.id,
        "bundle_id": b.bundle_id,
        "version": b.version,
        "mpy_version": b.mpy_version,
        "size": b.size,
        "files": b.files,
        "signed_by": b.signed_by,
        "uploaded_at": iso(b.uploaded_at),
        "uploaded_by": b.uploaded_by,
    }


def rollout_json(r: OtaRollout, targets: list[OtaTarget] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": r.id,
        "bundle": r.bundle_pk,
        "state": r.state,
        "reason": r.reason,
        "waves": r.waves,
        "wave": r.wave,
        "threshold_pct": r.threshold_pct,
        "confirm_s": r.confirm_s,
        "stall_s": r.stall_s,
        "created_at": iso(r.created_at),
        "created_by": r.created_by,
    }
    if targets is not None:
        out["counts"] = ota.counts(targets)
        out["targets"] = [
            {
                "terminal_id": t.terminal_id,
                "job": t.id,
                "wave": t.wave,
                "state": t.state,
                "percent": t.percent,
                "reason": t.reason,
                "updated_at": iso(t.updated_at),
            }
            for t in targets
        ]
    return out


@bp.get("/ota/bundles")
def list_bundles() -> dict[str, Any]:
    return {"items": [bundle_json(b) for b in ota.bundles(c.db(), viewer())]}


@bp.post("/ota/bundles")
def upload_bundle() -> tuple[dict[str, Any], int]:
    """The body is the archive made by ``mimamori-install sign``."""
    b = ota.upload_bundle(
        c.db(),
        viewer(),
        request.get_data(cache=False),
        trusted_keys=list(c.ctx().web.ota_keys),
        now=c.now(),
        ip=c.client_ip(),
    )
    return bundle_json(b), 201


@bp.get("/ota/rollouts")
def list_rollouts() -> dict[str, Any]:
    return {"items": [rollout_json(r) for r in ota.rollouts(c.db(), viewer())]}


@bp.post("/ota/rollouts")
def start_rollout() -> tuple[dict[str, Any], int]:
    who = viewer()
    data = json_body()
    ids = field(data, "terminals", list, None)
    if ids is not None and not all(isinstance(t, str) for t in ids):
        raise BadRequest("terminals is a list of terminal ids", "invalid_field")
    r = ota.start_rollout(
        c.db(),
        who,
        bundle_pk=field(data, "bundle", int, required=True),
        terminal_ids=ids,
        customer_id=field(data, "customer_id", int, None),
        waves=field(data, "waves", str, ota.DEFAULT_WAVES, nullable=False, max_length=100),
        threshold_pct=field(data, "threshold_pct", int, ota.DEFAULT_THRESHOLD_PCT, nullable=False),
        confirm_s=field(data, "confirm_s", int, ota.DEFAULT_CONFIRM_S, nullable=False),
        stall_s=field(data, "stall_s", int, ota.DEFAULT_STALL_S, nullable=False),
        now=c.now(),
        ip=c.client_ip(),
    )
    return rollout_json(r, ota.rollout_detail(c.db(), who, r.id)[2]), 201


@bp.get("/ota/rollouts/<int:rollout_id>")
def get_rollout(rollout_id: int) -> dict[str, Any]:
    r, _bundle, targets = ota.rollout_detail(c.db(), viewer(), ident(rollout_id))
    return rollout_json(r, targets)


@bp.post("/ota/rollouts/<int:rollout_id>/<any(pause, resume, cancel):action>")
def act_on_rollout(rollout_id: int, action: str) -> dict[str, Any]:
    r = ota.set_state(
        c.db(),
        viewer(),
        ident(rollout_id),
        action,
        now=c.now(),
        ip=c.client_ip(),
        publisher=c.publisher(),
    )
    return rollout_json(r)


def parked_json(g: parking.ParkedGroup) -> dict[str, Any]:
    return {
        "terminal_id": g.terminal_id,
        "reason": g.reason,
        "count": g.count,
        "oldest": iso(g.oldest),
        "newest": iso(g.newest),
        "release_requested": g.release_requested,
    }


@bp.get("/parked")
def list_parked() -> dict[str, Any]:
    return {"items": [parked_json(g) for g in parking.summary(c.db(), viewer())]}


@bp.get("/terminals/<tid>/parked")
def terminal_parked(tid: str) -> dict[str, Any]:
    return {"items": [parked_json(g) for g in parking.summary(c.db(), viewer(), tid)]}


@bp.post("/terminals/<tid>/parked/release")
def release_parked(tid: str) -> dict[str, Any]:
    return _act_on_parked(tid, parking.request_release)


@bp.post("/terminals/<tid>/parked/discard")
def discard_parked(tid: str) -> dict[str, Any]:
    return _act_on_parked(tid, parking.discard)


def _act_on_parked(tid: str, act: Callable[..., int]) -> dict[str, Any]:
    who = viewer()
    data = request.get_json(silent=True) if request.data else {}
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    reason = field(data, "reason", str, None, max_length=32)
    return {"frames": act(c.db(), who, tid, reason=reason, now=c.now(), ip=c.client_ip())}


@bp.post("/terminals/<tid>/provision")
def provision(tid: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The terminal's new MQTT credentials in a site file skeleton (shown once)."""
    who, terminal = scoped_terminal(tid)
    data = request.get_json(silent=True) if request.data else {}
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    rotate = field(data, "rotate", bool, False) or False
    web = c.ctx().web
    broker = admin.BrokerEndpoint(
        web.broker_public_host, web.broker_public_port, web.broker_public_tls, web.broker_seal_key
    )
    site = admin.provision(
        c.db(), who, terminal.id, broker, rotate=rotate, now=c.now(), ip=c.client_ip()
    )
    return site, 201, {"Cache-Control": "no-store"}


@bp.get("/terminals/<tid>/channels")
def list_channels(tid: str) -> dict[str, Any]:
    terminal = scoped_terminal(tid)[1]
    return _channels_json(terminal)


def _channels_json(terminal: Terminal) -> dict[str, Any]:
    named = labels.for_terminal(c.db(), terminal.id)
    return {"items": [channel_json(ch, named[ch.name]) for ch in terminal.channels]}


@bp.put("/terminals/<tid>/labels")
def set_labels(tid: str) -> dict[str, Any]:
    """Display names, contact state names and key flags of some channels;
    channels not in the body keep theirs. Answers the channel list."""
    who, terminal = scoped_terminal(tid)
    items = field(json_body(), "labels", list, required=True, nullable=False)
    if len(items) > labels.MAX_INPUTS:
        raise BadRequest(f"at most {labels.MAX_INPUTS} labels at once", "invalid_field")
    inputs = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("labels must be objects", "invalid_field")
        inputs.append(
            labels.LabelInput(
                channel=field(item, "channel", str, required=True, max_length=64),
                display_name=field(item, "display_name", str, "", nullable=False, max_length=100),
                state_off=field(item, "state_off", str, "", nullable=False, max_length=32),
                state_on=field(item, "state_on", str, "", nullable=False, max_length=32),
                key=field(item, "key", bool, False, nullable=False),
            )
        )
    labels.save(c.db(), who, terminal, inputs, now=c.now(), ip=c.client_ip())
    return _channels_json(terminal)


def _channel(terminal: Terminal) -> Channel:
    name = request.args.get("channel", "")
    for ch in terminal.channels:
        if ch.name == name:
            return ch
    raise NotFound(f"channel {name!r}")


def _range() -> tuple[int, int]:
    now = int(c.now().timestamp())
    end = int_arg("end", now, 0, 2**32 - 1)
    start = int_arg("start", (end or now) - 86400, 0, 2**32 - 1)
    assert start is not None and end is not None
    if end <= start:
        raise BadRequest("end must be after start", "invalid_parameter")
    return start, end


@bp.get("/terminals/<tid>/samples")
def list_samples(tid: str) -> Response:
    """Raw samples of one channel, oldest first, paged by time."""
    terminal = scoped_terminal(tid)[1]
    ch = _channel(terminal)
    start, end = _range()
    limit = int_arg("limit", 1000, 1, MAX_SAMPLES) or 1000
    after = cursor_arg(int)
    lo = start if after is None else max(start, after + 1)
    points = c.ctx().store.raw(terminal.id, ch.name, lo, end, limit + 1)
    more = len(points) > limit
    points = points[:limit]
    return page([{"ts": p.ts, "value": p.value} for p in points], points[-1].ts if more else None)


@bp.get("/terminals/<tid>/series")
def aggregated(tid: str) -> dict[str, Any]:
    """At most ``max_points`` values: raw, or min/mean/max buckets (graph data)."""
    terminal = scoped_terminal(tid)[1]
    ch = _channel(terminal)
    start, end = _range()
    max_points = int_arg("max_points", 500, 1, MAX_POINTS) or 500
    return series.graph_data(
        c.ctx().store, terminal.id, ch, start, end, max_points=max_points, zone=zone_of(terminal)
    )


def zone_of(terminal: Terminal) -> ZoneInfo:
    if terminal.customer is not None:
        return ZoneInfo(terminal.customer.timezone)
    return ZoneInfo(c.ctx().settings.default_timezone)


# -- alarms --------------------------------------------------------------------


@bp.get("/alarms")
def list_alarms() -> Response:
    """Alarms newest first; filters ``terminal_id``, ``state`` (or ``open``), ``severity``."""
    who = viewer()
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    before = cursor_arg(int)
    stmt = scoped(who, Alarm)
    tid = request.args.get("terminal_id")
    if tid:
        stmt = stmt.where(Alarm.terminal_id == tid)
    # An empty value is a value too (and not one the document allows).
    state = request.args.get("state")
    if state == "open":
        stmt = stmt.where(Alarm.state != AlarmState.CLEARED)
    elif state is not None:
        if state not in set(AlarmState):
            raise BadRequest("unknown state", "invalid_parameter")
        stmt = stmt.where(Alarm.state == AlarmState(state))
    severity = request.args.get("severity")
    if severity is not None:
        if severity not in set(Severity):
            raise BadRequest("unknown severity", "invalid_parameter")
        stmt = stmt.where(Alarm.severity == Severity(severity))
    if before is not None:
        stmt = stmt.where(Alarm.id < before)
    rows = list(c.db().scalars(stmt.order_by(Alarm.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    name = labels.names(c.db(), [a.terminal_id for a in rows])
    return page([alarm_json(a, name) for a in rows], rows[-1].id if more else None)


@bp.get("/alarms/<int:alarm_id>")
def get_alarm(alarm_id: int) -> dict[str, Any]:
    alarm = get_scoped(c.db(), viewer(), Alarm, ident(alarm_id))
    return alarm_json(alarm, labels.names(c.db(), [alarm.terminal_id]))


@bp.post("/alarms/<int:alarm_id>/acknowledge")
def acknowledge(alarm_id: int) -> dict[str, Any]:
    who = viewer()
    ident(alarm_id)
    data = request.get_json(silent=True) if request.data else {}
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    comment = field(data, "comment", str, "", max_length=2000) or ""
    alarm = alarms.acknowledge(c.db(), who, alarm_id, comment, now=c.now(), ip=c.client_ip())
    return alarm_json(alarm, labels.names(c.db(), [alarm.terminal_id]))


def _api_day(name: str) -> date | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as err:
        raise BadRequest(f"{name} must be a date (YYYY-MM-DD)", "invalid_parameter") from err


@bp.get("/alarms/export")
def export_alarms() -> Response:
    """The alarm history with the list's filters, every match, as CSV."""
    who = viewer()
    state = request.args.get("state")
    if state is not None and state != "open" and state not in set(AlarmState):
        raise BadRequest("unknown state", "invalid_parameter")
    severity = request.args.get("severity")
    if severity is not None and severity not in set(Severity):
        raise BadRequest("unknown severity", "invalid_parameter")
    zone = _viewer_zone(who)
    start, end = _api_day("from"), _api_day("to")
    f = alarms.AlarmFilter(
        terminal_id=request.args.get("terminal_id") or None,
        state=state,
        severity=severity,
        start=None if start is None else datetime.combine(start, datetime.min.time(), zone),
        end=None
        if end is None
        else datetime.combine(end + timedelta(days=1), datetime.min.time(), zone),
    )
    user = c.db().get(User, who.user_id)
    language = user.language if user is not None else "ja"
    body = reports.alarm_csv(c.db(), who, f, zone=zone, language=language)
    return Response(body, mimetype="text/csv; charset=utf-8")


def _viewer_zone(who: Viewer) -> ZoneInfo:
    customer = c.db().get(Customer, who.customer_id) if who.customer_id else None
    return customer.zone if customer else ZoneInfo(c.ctx().settings.default_timezone)


# -- monthly reports -------------------------------------------------------------


def _report_customer(who: Viewer) -> Customer:
    customer_id = request.args.get("customer_id")
    if customer_id is not None and not customer_id.isdigit():
        raise BadRequest("customer_id must be a number", "invalid_parameter")
    customer = reports.customer_of(c.db(), who, int(customer_id) if customer_id else None)
    if customer is None:
        raise BadRequest("customer_id is required for staff", "missing_parameter")
    return customer


@bp.get("/reports")
def list_reports() -> dict[str, Any]:
    who = viewer()
    customer = _report_customer(who)
    items = []
    for r in reports.issued(c.db(), who, customer):
        month = f"{r.month:%Y-%m}"
        query = f"?customer_id={customer.id}" if who.customer_id is None else ""
        items.append(
            {
                "id": r.id,
                "month": month,
                "terminals": r.terminals,
                "issued_at": iso(r.created_at),
                "pdf": f"{errors.PREFIX}/reports/{month}/pdf{query}",
                "csv": f"{errors.PREFIX}/reports/{month}/csv{query}",
            }
        )
    return {"items": items}


@bp.get("/reports/<month>/<extension>")
def get_report(month: str, extension: str) -> Response:
    who = viewer()
    if extension not in ("pdf", "csv"):
        raise NotFound(f"report format {extension!r}")
    try:
        first = date.fromisoformat(f"{month}-01")
    except ValueError as err:
        raise NotFound(f"report {month}") from err
    row = reports.issued_month(c.db(), who, _report_customer(who), first)
    if row is None:
        raise NotFound(f"report {month}")
    mime = "application/pdf" if extension == "pdf" else "text/csv; charset=utf-8"
    return Response(
        getattr(row, extension),
        mimetype=mime,
        headers={"Content-Disposition": f'attachment; filename="{row.file_name(extension)}"'},
    )


# -- thresholds ----------------------------------------------------------------


@bp.get("/terminals/<tid>/thresholds")
def list_thresholds(tid: str) -> dict[str, Any]:
    terminal = scoped_terminal(tid)[1]
    return {"items": [rule_json(r) for r in configs.terminal_rules(c.db(), terminal.id)]}


def _rule_input(data: dict[str, Any]) -> configs.RuleInput:
    number = (int, float)
    return configs.RuleInput(
        channel=field(data, "channel", str, required=True),
        cond=field(data, "cond", str, required=True),
        warn=field(data, "warn", number),
        alarm=field(data, "alarm", number),
        hysteresis=field(data, "hysteresis", number, 0.0) or 0.0,
        on_delay_s=field(data, "on_delay_s", int, 0) or 0,
        off_delay_s=field(data, "off_delay_s", int, 0) or 0,
        count=field(data, "count", int),
        window_s=field(data, "window_s", int),
        enabled=field(data, "enabled", bool, True) is not False,
    )


def _save(
    terminal: Terminal,
    who: Viewer,
    rules: dict[int, configs.RuleInput | None],
    new_rule: configs.RuleInput | None,
) -> int | None:
    require(who, CONFIGURE)
    now = configs.current(c.db(), terminal)
    inp = configs.SettingsInput(
        rules=rules,
        new_rule=new_rule,
        sampling=now.sampling,
        heartbeat=now.heartbeat,
        upload=now.upload,
    )
    return configs.save(c.db(), who, terminal, inp, c.publisher(), now=c.now(), ip=c.client_ip())


@bp.post("/terminals/<tid>/thresholds")
def create_threshold(tid: str) -> tuple[dict[str, Any], int]:
    """Add a rule and push the resulting config to the terminal (retained)."""
    who, terminal = scoped_terminal(tid)
    rule = _rule_input(json_body())
    version = _save(terminal, who, {}, rule)
    created = next(
        r
        for r in configs.terminal_rules(c.db(), terminal.id)
        if r.channel == rule.channel and r.cond == rule.cond
    )
    return {"rule": rule_json(created), "config_version": version}, 201


@bp.delete("/terminals/<tid>/thresholds/<int:rule_id>")
def delete_threshold(tid: str, rule_id: int) -> dict[str, Any]:
    who, terminal = scoped_terminal(tid)
    mine = sa.select(AlarmCondition.id).where(
        AlarmCondition.id == ident(rule_id), AlarmCondition.terminal_id == terminal.id
    )
    if c.db().scalar(mine) is None:
        raise NotFound(f"rule {rule_id}")
    version = _save(terminal, who, {rule_id: None}, None)
    return {"config_version": version}


# -- notification targets ------------------------------------------------------


def _target_input(data: dict[str, Any]) -> targets.TargetInput:
    return targets.TargetInput(
        channel=field(data, "channel", str, required=True),
        address=field(data, "address", str, required=True, max_length=500),
        terminal_id=field(data, "terminal_id", str),
        cond=field(data, "cond", str),
        channel_name=field(data, "channel_name", str, max_length=64),
        min_severity=field(data, "min_severity", str, "warning") or "warning",
        language=field(data, "language", str),
        notify_recovery=field(data, "notify_recovery", bool, True) is not False,
        enabled=field(data, "enabled", bool, True) is not False,
    )


@bp.get("/targets")
def list_targets() -> Response:
    who = viewer()
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    after = cursor_arg(int)
    stmt = scoped(who, NotificationTarget).order_by(NotificationTarget.id)
    if after is not None:
        stmt = stmt.where(NotificationTarget.id > after)
    rows = list(c.db().scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return page([target_json(t) for t in rows], rows[-1].id if more else None)


@bp.post("/targets")
def create_target() -> tuple[dict[str, Any], int, dict[str, str]]:
    who = viewer()
    data = json_body()
    customer_id = field(data, "customer_id", int, who.customer_id)
    if customer_id is None:
        raise BadRequest("customer_id is required for staff", "invalid_field")
    target = targets.create(
        c.db(),
        who,
        customer_id,
        _target_input(data),
        addresses=c.ctx().addresses,
        now=c.now(),
        ip=c.client_ip(),
    )
    body = target_json(target)
    if target.channel == DeliveryChannel.WEBHOOK:
        body["hmac_secret"] = target.hmac_secret  # this once
    return body, 201, {"Location": url_for("api.get_target", target_id=target.id)}


@bp.post("/targets/<int:target_id>/secret")
def rotate_target_secret(target_id: int) -> dict[str, Any]:
    _target, secret = targets.rotate_secret(
        c.db(), viewer(), ident(target_id), now=c.now(), ip=c.client_ip()
    )
    return {"hmac_secret": secret}


@bp.get("/targets/<int:target_id>")
def get_target(target_id: int) -> dict[str, Any]:
    return target_json(get_scoped(c.db(), viewer(), NotificationTarget, ident(target_id)))


@bp.put("/targets/<int:target_id>")
def update_target(target_id: int) -> dict[str, Any]:
    who = viewer()
    target = targets.update(
        c.db(),
        who,
        ident(target_id),
        _target_input(json_body()),
        addresses=c.ctx().addresses,
        now=c.now(),
        ip=c.client_ip(),
    )
    return target_json(target)


@bp.delete("/targets/<int:target_id>")
def delete_target(target_id: int) -> tuple[str, int]:
    targets.delete(c.db(), viewer(), ident(target_id), now=c.now(), ip=c.client_ip())
    return "", 204


# -- maintenance windows -------------------------------------------------------


def window_json(w: MaintenanceWindow) -> dict[str, Any]:
    return {
        "id": w.id,
        "customer_id": w.customer_id,
        "terminal_id": w.terminal_id,
        "channels": list(w.channels or []),
        "starts_at": iso(w.starts_at),
        "ends_at": iso(w.ends_at),
        "reason": w.reason,
        "announcement_id": w.announcement_id,
    }


def _instant(data: dict[str, Any], name: str) -> datetime:
    text = field(data, name, str, required=True, max_length=40)
    try:
        at = datetime.fromisoformat(text)
        if at.tzinfo is None:
            raise BadRequest(f"{name} needs a UTC offset (e.g. +09:00 or Z)", "invalid_field")
        return at.astimezone(UTC)
    except (ValueError, OverflowError) as err:  # year 1 at +14:00 falls off the calendar
        raise BadRequest(f"{name} is not an ISO 8601 time", "invalid_field") from err


@bp.get("/maintenance-windows")
def list_windows() -> Response:
    """Windows in force or to come, then the last ended ones."""
    rows = maintenance.listing(c.db(), viewer(), now=c.now(), include_past=True)
    return page([window_json(w) for w in rows], None)


@bp.post("/maintenance-windows")
def create_window() -> tuple[dict[str, Any], int]:
    who = viewer()
    data = json_body()
    customer_id = field(data, "customer_id", int, who.customer_id)
    if customer_id is None:
        raise BadRequest("customer_id is required for staff", "invalid_field")
    channels = field(data, "channels", list, [], nullable=False)
    if not all(isinstance(ch, str) and 0 < len(ch) <= 64 for ch in channels):
        raise BadRequest("channels must be channel names", "invalid_field")
    inp = maintenance.WindowInput(
        starts_at=_instant(data, "starts_at"),
        ends_at=_instant(data, "ends_at"),
        terminal_id=field(data, "terminal_id", str, max_length=32),
        channels=tuple(channels),
        reason=field(data, "reason", str, "", max_length=200) or "",
    )
    window = maintenance.create(c.db(), who, customer_id, inp, now=c.now(), ip=c.client_ip())
    return window_json(window), 201


@bp.post("/maintenance-windows/<int:window_id>/end")
def end_window(window_id: int) -> tuple[dict[str, Any] | str, int]:
    """End a window in force now; delete one not begun (204)."""
    window = maintenance.end(c.db(), viewer(), ident(window_id), now=c.now(), ip=c.client_ip())
    return (window_json(window), 200) if window is not None else ("", 204)


# -- forwarding endpoints (docs/forwarding.md) ---------------------------------


def endpoint_json(e: ForwardingEndpoint) -> dict[str, Any]:
    """An endpoint as the site's page shows it; a webhook's signing secret
    only in the answer that made it (never here)."""
    sftp = e.kind == "sftp"
    return {
        "id": e.id,
        "customer_id": e.customer_id,
        "kind": e.kind,
        "name": e.name,
        "url": e.url,
        "terminal_id": e.terminal_id,
        "enabled": bool(e.enabled),
        "file_period": e.file_period if sftp else None,
        "file_scope": e.file_scope if sftp else None,
        "file_timezone": e.file_timezone if sftp else None,
        "host_key": e.host_key if sftp else None,
        "host_key_fingerprint": forwarding.host_key_fingerprint(e) or None,
        # the line the customer adds to the account's authorized_keys
        "public_key": forwarding.public_key(e) or None,
        "last_attempt_at": iso(e.last_attempt_at),
        "last_success_at": iso(e.last_success_at),
        "last_error": e.last_error,
        "consecutive_failures": e.consecutive_failures or 0,
        "created_at": iso(e.created_at),
    }


def _endpoint_fields(
    data: dict[str, Any], zone: str, current: ForwardingEndpoint | None = None
) -> dict[str, Any]:
    """The service's keyword arguments from a request body; file settings
    left out keep ``current``'s (or take the defaults: daily, per terminal,
    ``zone``); an empty host_key keeps the pinned one on a change."""

    def text(name: str, default: str, max_length: int = 64) -> str:
        value = field(data, name, str, default, max_length=max_length)
        return value or default

    file = forwarding.FileInput(
        host_key=field(data, "host_key", str, "", max_length=4000) or "",
        period=text("file_period", (current and current.file_period) or "daily"),
        scope=text("file_scope", (current and current.file_scope) or "terminal"),
        timezone=text("file_timezone", (current and current.file_timezone) or zone),
    )
    return {
        "name": field(data, "name", str, "", max_length=200) or "",
        "url": field(data, "url", str, required=True, max_length=500),
        "terminal_id": field(data, "terminal_id", str, max_length=32),
        "file": file,
    }


@bp.get("/forwarding-endpoints")
def list_endpoints() -> Response:
    who = viewer()
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    after = cursor_arg(int)
    stmt = scoped(who, ForwardingEndpoint).order_by(ForwardingEndpoint.id)
    if after is not None:
        stmt = stmt.where(ForwardingEndpoint.id > after)
    rows = list(c.db().scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return page([endpoint_json(e) for e in rows], rows[-1].id if more else None)


@bp.post("/forwarding-endpoints")
def create_endpoint() -> tuple[dict[str, Any], int, dict[str, str]]:
    who = viewer()
    data = json_body()
    customer_id = field(data, "customer_id", int, who.customer_id)
    if customer_id is None:
        raise BadRequest("customer_id is required for staff", "invalid_field")
    customer = get_scoped(c.db(), who, Customer, ident(customer_id))
    endpoint, secret = forwarding.create(
        c.db(),
        who,
        customer.id,
        **_endpoint_fields(data, customer.timezone),
        addresses=c.ctx().addresses,
        now=c.now(),
        ip=c.client_ip(),
    )
    body = endpoint_json(endpoint)
    if endpoint.kind == "webhook":
        body["hmac_secret"] = secret  # this once
    location = url_for("api.get_endpoint", endpoint_id=endpoint.id)
    return body, 201, {"Location": location}


@bp.get("/forwarding-endpoints/<int:endpoint_id>")
def get_endpoint(endpoint_id: int) -> dict[str, Any]:
    return endpoint_json(get_scoped(c.db(), viewer(), ForwardingEndpoint, ident(endpoint_id)))


@bp.put("/forwarding-endpoints/<int:endpoint_id>")
def update_endpoint(endpoint_id: int) -> dict[str, Any]:
    who = viewer()
    current = get_scoped(c.db(), who, ForwardingEndpoint, ident(endpoint_id))
    data = json_body()
    endpoint = forwarding.update(
        c.db(),
        who,
        current.id,
        **_endpoint_fields(data, current.customer.timezone, current),
        enabled=field(data, "enabled", bool, True) is not False,
        addresses=c.ctx().addresses,
        now=c.now(),
        ip=c.client_ip(),
    )
    return endpoint_json(endpoint)


@bp.post("/forwarding-endpoints/<int:endpoint_id>/secret")
def rotate_endpoint_secret(endpoint_id: int) -> dict[str, Any]:
    """A webhook's new signing secret, or an SFTP endpoint's new key pair
    (its public half to install; the old key stops working)."""
    endpoint, secret = forwarding.rotate_secret(
        c.db(), viewer(), ident(endpoint_id), now=c.now(), ip=c.client_ip()
    )
    if endpoint.kind == "sftp":
        return {"public_key": secret}
    return {"hmac_secret": secret}


@bp.delete("/forwarding-endpoints/<int:endpoint_id>")
def delete_endpoint(endpoint_id: int) -> tuple[str, int]:
    forwarding.delete(c.db(), viewer(), ident(endpoint_id), now=c.now(), ip=c.client_ip())
    return "", 204
