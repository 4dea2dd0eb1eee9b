"""The operator area: customers, users, terminals and contracts, provisioning,
announcements, audit log. Installers reach the terminal pages only."""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import Customer, Role, Terminal, User
from cloud.ops import availability as ops_availability
from cloud.ops import prices as price_list
from cloud.ops.settings import COMPONENTS, OpsSettings
from cloud.services import admin as service
from cloud.services import console, mailsink, parking, sensors, twofactor
from cloud.services import prices as price_service
from cloud.services.errors import N_, Invalid, MailError, NotFound
from cloud.services.scope import OPERATE, PROVISION, require
from cloud.web.blueprints.auth import queue_reset_mail, send_invitation_mail
from cloud.web.forms import local_datetime

bp = Blueprint("admin", __name__, url_prefix="/admin")
log = logging.getLogger(__name__)


@bp.before_request
@login_required
def staff_only() -> None:
    """Every page here needs a staff role (installer or operator); login_required
    answers anonymous requests with the redirect to the login page."""
    require(c.viewer(), PROVISION)


def _operator() -> None:
    require(c.viewer(), OPERATE)


def _date(name: str) -> date | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as err:
        raise Invalid(
            N_("%(field)s: %(value)s is not a date (YYYY-MM-DD)."), field=name, value=raw
        ) from err


def _opt_int(name: str) -> int | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as err:
        raise Invalid(
            N_("%(field)s: %(value)s is not a whole number."), field=name, value=raw
        ) from err


@bp.get("")
def index() -> str:
    """Operators land on the operations console; installers on their menu."""
    has_mail_sink = mailsink.sink_dir() is not None
    if not c.viewer().may(OPERATE):
        return render_template("admin/index.html", has_mail_sink=has_mail_sink)
    snap = console.snapshot(c.db(), c.now(), OpsSettings.load(), c.zone())
    return render_template(
        "admin/console.html",
        snap=snap,
        findings=console.assess(snap),
        dead=console.dead_letters(c.db()),
        has_mail_sink=has_mail_sink,
    )


@bp.post("/dead-letters/requeue")
def requeue() -> Response:
    """Give dead notifications a fresh retry budget (operators; audited)."""
    _operator()
    ids = [int(x) for x in request.form.getlist("id") if x.isdigit()]
    try:
        n = console.requeue(c.db(), c.viewer(), ids, now=c.now(), ip=c.client_ip())
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    else:
        flash(_("%(n)d notifications queued again.", n=n), "ok")
    return redirect(url_for("admin.index") + "#dead-letters")


# -- customers -----------------------------------------------------------------


def _customer_input() -> service.CustomerInput:
    f = request.form
    demand = f.get("contracted_demand_kw", "").strip()
    try:
        kw = float(demand) if demand else None
    except ValueError as err:
        raise Invalid(
            N_("%(field)s: %(value)s is not a number."), field="contracted_demand_kw", value=demand
        ) from err
    return service.CustomerInput(
        name=f.get("name", ""),
        contracted_demand_kw=kw,
        timezone=f.get("timezone", "Asia/Tokyo"),
        language=f.get("language", "ja"),
        active=bool(f.get("active")),
    )


@bp.route("/customers", methods=["GET", "POST"])
def customers() -> str | Response | tuple[str, int]:
    _operator()
    error = None
    if request.method == "POST":
        try:
            service.save_customer(
                c.db(), c.viewer(), None, _customer_input(), now=c.now(), ip=c.client_ip()
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            flash(_("Customer saved."), "ok")
            return redirect(url_for("admin.customers"))
    return render_template(
        "admin/customers.html", customers=service.customers(c.db()), error=error
    ), 400 if error else 200


@bp.route("/customers/<int:customer_id>", methods=["GET", "POST"])
def customer(customer_id: int) -> str | Response | tuple[str, int]:
    _operator()
    item = c.db().get(Customer, customer_id)
    if item is None:
        raise NotFound(f"customer {customer_id}")
    error = None
    if request.method == "POST":
        try:
            service.save_customer(
                c.db(), c.viewer(), customer_id, _customer_input(), now=c.now(), ip=c.client_ip()
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            flash(_("Customer saved."), "ok")
            return redirect(url_for("admin.customers"))
    return render_template(
        "admin/customer.html",
        customer=item,
        error=error,
        users=service.users(c.db(), customer_id),
        terminals=service.terminals(c.db(), customer_id),
    ), 400 if error else 200


# -- users ---------------------------------------------------------------------


def _user_input() -> service.UserInput:
    f = request.form
    return service.UserInput(
        email=f.get("email", ""),
        name=f.get("name", ""),
        role=f.get("role", ""),
        customer_id=f.get("customer_id", type=int),
        language=f.get("language", "ja"),
        active=bool(f.get("active")),
    )


@bp.route("/users", methods=["GET", "POST"])
def users() -> str | Response | tuple[str, int]:
    _operator()
    error = None
    if request.method == "POST":
        try:
            user = service.save_user(
                c.db(),
                c.viewer(),
                c.ctx().passwords,
                None,
                _user_input(),
                now=c.now(),
                ip=c.client_ip(),
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            # New users choose their own password through the invitation's link.
            try:
                send_invitation_mail(user)
            except MailError:
                log.exception("invitation mail to user %s failed", user.id)
                flash(
                    _("User created, but the invitation mail failed: send a reset link."), "error"
                )
            else:
                flash(_("User created; a link to choose a password was mailed."), "ok")
            return redirect(url_for("admin.users"))
    return render_template(
        "admin/users.html",
        users=service.users(c.db()),
        customers=service.customers(c.db()),
        roles=list(Role),
        error=error,
    ), 400 if error else 200


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
def user(user_id: int) -> str | Response | tuple[str, int]:
    _operator()
    item = c.db().get(User, user_id)
    if item is None:
        raise NotFound(f"user {user_id}")
    error = None
    if request.method == "POST":
        try:
            service.save_user(
                c.db(),
                c.viewer(),
                c.ctx().passwords,
                user_id,
                _user_input(),
                now=c.now(),
                ip=c.client_ip(),
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            flash(_("User saved."), "ok")
            return redirect(url_for("admin.users"))
    return render_template(
        "admin/user.html",
        user=item,
        customers=service.customers(c.db()),
        roles=list(Role),
        error=error,
    ), 400 if error else 200


@bp.post("/users/<int:user_id>/reset")
def user_reset(user_id: int) -> Response:
    _operator()
    item = c.db().get(User, user_id)
    if item is None:
        raise NotFound(f"user {user_id}")
    queue_reset_mail(item.id)
    flash(_("A password reset link was mailed to %(email)s.", email=item.email), "ok")
    return redirect(url_for("admin.user", user_id=user_id))


@bp.post("/users/<int:user_id>/two-factor/reset")
def user_two_factor_reset(user_id: int) -> Response:
    """A user lost the phone and the recovery codes: two-step login starts
    over (staff set it up again at their next login)."""
    _operator()
    item = c.db().get(User, user_id)
    if item is None:
        raise NotFound(f"user {user_id}")
    twofactor.disable(c.db(), c.viewer(), item, now=c.now(), ip=c.client_ip())
    flash(_("Two-step login of %(email)s was reset.", email=item.email), "ok")
    return redirect(url_for("admin.user", user_id=user_id))


# -- terminals -----------------------------------------------------------------


def _terminal_input() -> service.TerminalInput:
    f = request.form
    return service.TerminalInput(
        name=f.get("name", ""),
        customer_id=f.get("customer_id", type=int),
        site_address=f.get("site_address", ""),
        registered_on=_date("registered_on"),
        contract_start=_date("contract_start"),
        contract_end=_date("contract_end"),
        cancellation_notice_on=_date("cancellation_notice_on"),
    )


@bp.route("/terminals", methods=["GET", "POST"])
def terminals() -> str | Response | tuple[str, int]:
    error = None
    if request.method == "POST":
        tid = request.form.get("id", "").strip()
        try:
            service.save_terminal(
                c.db(),
                c.viewer(),
                tid,
                _terminal_input(),
                create=True,
                now=c.now(),
                ip=c.client_ip(),
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            flash(_("Terminal %(id)s registered.", id=tid), "ok")
            return redirect(url_for("admin.terminal", tid=tid))
    return render_template(
        "admin/terminals.html",
        terminals=service.terminals(c.db()),
        parked=parking.counts(c.db(), c.viewer()) if c.viewer().may(OPERATE) else {},
        customers=service.customers(c.db()),
        error=error,
        today=c.now().astimezone(c.zone()).date(),
    ), 400 if error else 200


@bp.route("/terminals/<tid>", methods=["GET", "POST"])
def terminal(tid: str) -> str | Response | tuple[str, int]:
    item = c.db().get(Terminal, tid)
    if item is None:
        raise NotFound(f"terminal {tid}")
    error = None
    if request.method == "POST":
        try:
            service.save_terminal(
                c.db(),
                c.viewer(),
                tid,
                _terminal_input(),
                create=False,
                now=c.now(),
                ip=c.client_ip(),
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            flash(_("Terminal saved."), "ok")
            return redirect(url_for("admin.terminal", tid=tid))
    viewer = c.viewer()
    return render_template(
        "admin/terminal.html",
        terminal=item,
        customers=service.customers(c.db()),
        error=error,
        parked=parking.summary(c.db(), viewer, tid) if viewer.may(OPERATE) else [],
        sensors=sensors.of_terminal(item, (ch.name for ch in item.channels)),
    ), 400 if error else 200


@bp.post("/terminals/<tid>/parked")
def terminal_parked(tid: str) -> Response:
    """Release or discard parked frames of one reason (operators; audited)."""
    action = request.form.get("action", "")
    reason = request.form.get("reason") or None
    if action not in ("release", "discard"):
        raise Invalid(N_("Unknown action."))
    act = parking.request_release if action == "release" else parking.discard
    try:
        n = act(c.db(), c.viewer(), tid, reason=reason, now=c.now(), ip=c.client_ip())
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    else:
        if action == "release":
            flash(_("%(n)d frames released: they are applied within seconds.", n=n), "ok")
        else:
            flash(_("%(n)d frames discarded.", n=n), "ok")
    return redirect(url_for("admin.terminal", tid=tid) + "#parked")


@bp.post("/terminals/<tid>/status")
def terminal_status(tid: str) -> Response:
    try:
        service.set_status(
            c.db(),
            c.viewer(),
            tid,
            request.form.get("status", ""),
            reason=request.form.get("reason", "")[:500],
            now=c.now(),
            ip=c.client_ip(),
        )
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    else:
        flash(_("Status saved. The broker account follows within seconds."), "ok")
    return redirect(url_for("admin.terminal", tid=tid))


@bp.post("/terminals/<tid>/provision")
def provision(tid: str) -> tuple[str, int, dict[str, str]]:
    web = c.ctx().web
    broker = service.BrokerEndpoint(
        web.broker_public_host, web.broker_public_port, web.broker_public_tls, web.broker_seal_key
    )
    try:
        site: dict[str, Any] = service.provision(
            c.db(),
            c.viewer(),
            tid,
            broker,
            rotate=bool(request.form.get("rotate")),
            now=c.now(),
            ip=c.client_ip(),
        )
    except Invalid as err:
        flash(c.message(err), "error")
        item = c.db().get(Terminal, tid)
        return (
            render_template(
                "admin/terminal.html",
                terminal=item,
                customers=service.customers(c.db()),
                error=None,
                sensors=None
                if item is None
                else sensors.of_terminal(item, (ch.name for ch in item.channels)),
            ),
            409,
            {},
        )
    # Shown once: this response is the only place the password ever exists.
    return (
        render_template(
            "admin/provisioned.html",
            tid=tid,
            password=site["credentials"]["password"],
            site_json=json.dumps(site, indent=2, ensure_ascii=False),
        ),
        200,
        {"Cache-Control": "no-store"},
    )


# -- announcements -------------------------------------------------------------


@bp.route("/announcements", methods=["GET", "POST"])
def announcements() -> str | Response | tuple[str, int]:
    _operator()
    error = None
    if request.method == "POST":
        f = request.form
        try:
            ids = [int(x) for x in f.getlist("customer_ids") if x]
            service.create_announcement(
                c.db(),
                c.viewer(),
                title=f.get("title", ""),
                body=f.get("body", ""),
                starts_at=local_datetime("starts_at"),
                ends_at=local_datetime("ends_at"),
                customer_ids=ids or None,
                components=[x.strip() for x in f.get("components", "").split(",") if x.strip()],
                now=c.now(),
                ip=c.client_ip(),
                mute_alarms=bool(f.get("mute_alarms")),
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            flash(_("Announcement saved."), "ok")
            return redirect(url_for("admin.announcements"))
    return render_template(
        "admin/announcements.html",
        announcements=service.announcements(c.db()),
        customers=service.customers(c.db()),
        error=error,
    ), 400 if error else 200


@bp.post("/announcements/<int:announcement_id>/delete")
def announcement_delete(announcement_id: int) -> Response:
    _operator()
    service.delete_announcement(c.db(), c.viewer(), announcement_id, now=c.now(), ip=c.client_ip())
    flash(_("Announcement deleted."), "ok")
    return redirect(url_for("admin.announcements"))


# -- availability --------------------------------------------------------------


@bp.get("/availability")
def availability() -> str:
    """Measured availability per component and of the service, this month and
    the previous one (figures from the scheduler's health checks)."""
    _operator()
    now = c.now()
    this_month = now.astimezone(c.zone()).date().replace(day=1)
    previous = (this_month - timedelta(days=1)).replace(day=1)
    months = [
        ops_availability.monthly(c.db(), m, COMPONENTS, zone=c.zone(), now=now)
        for m in (this_month, previous)
    ]
    return render_template("admin/availability.html", months=months)


# -- price list -----------------------------------------------------------------


def _month(name: str) -> date:
    raw = request.form.get(name, "").strip()
    try:
        return date.fromisoformat(f"{raw}-01")
    except ValueError as err:
        raise Invalid(
            N_("%(field)s: %(value)s is not a month (YYYY-MM)."), field=name, value=raw
        ) from err


@bp.route("/prices", methods=["GET", "POST"])
def prices() -> str | Response | tuple[str, int]:
    """The price list: each item's price today, changes set for later months,
    and a form to set one (from the first of a month; audited)."""
    _operator()
    error = None
    today = c.now().astimezone(c.zone()).date()
    if request.method == "POST":
        item = request.form.get("item", "")
        try:
            price = _opt_int("unit_price")
            if price is None:
                raise Invalid(N_("A price is required."))
            price_service.set_price(
                c.db(),
                c.viewer(),
                item,
                price,
                _month("effective_from"),
                zone=c.zone(),
                now=c.now(),
                ip=c.client_ip(),
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            flash(_("Price saved."), "ok")
            return redirect(url_for("admin.prices"))
    return render_template(
        "admin/prices.html",
        rows=price_service.overview(c.db(), today),
        history=price_list.history(c.db()),
        items=price_list.ITEMS,
        next_month=(today.replace(day=28) + timedelta(days=4)).replace(day=1),
        error=error,
    ), 400 if error else 200


# -- demo mail sink -------------------------------------------------------------


@bp.get("/mail")
def mail() -> str:
    """Mail received by the built-in SMTP sink (``make demo``), newest first.

    404 on a site without a sink: production mail goes to a real relay."""
    _operator()
    directory = mailsink.sink_dir()
    if directory is None:
        raise NotFound("mail sink (this site has none)")
    return render_template("admin/mail.html", messages=mailsink.list_messages(directory))


# -- audit log -----------------------------------------------------------------


@bp.get("/audit")
def audit() -> str:
    f = service.AuditFilter(
        action=request.args.get("action", ""),
        actor=request.args.get("actor", ""),
        customer_id=request.args.get("customer", type=int),
        page=request.args.get("page", 1, type=int),
    )
    rows, pages = service.audit_log(c.db(), c.viewer(), f)
    return render_template(
        "admin/audit.html", rows=rows, pages=pages, f=f, customers=service.customers(c.db())
    )
