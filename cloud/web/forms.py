"""WTForms forms of the simple pages (every form carries a CSRF token).

Pages with many repeated rows (terminal settings) post plain fields that
:mod:`cloud.services.configs` parses; CSRFProtect checks them all the same.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import request
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from cloud.http import context as c
from cloud.services.errors import N_, Invalid


def local_datetime(name: str) -> datetime:
    """The ``datetime-local`` field ``name`` of the posted form, read in the
    user's zone, as UTC. Raises :class:`Invalid` naming the field."""
    raw = request.form.get(name, "").strip()
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=c.zone()).astimezone(UTC)
    except (ValueError, OverflowError) as err:  # OverflowError: year 1 east of UTC
        raise Invalid(
            N_("%(field)s: %(value)s is not a date and time."), field=name, value=raw
        ) from err


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail address"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])


class PasswordChangeForm(FlaskForm):
    current = PasswordField(_l("Current password"), validators=[DataRequired()])
    new = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField(
        _l("New password again"),
        validators=[DataRequired(), EqualTo("new", message=_l("The passwords differ."))],
    )


class ResetRequestForm(FlaskForm):
    email = EmailField(_l("E-mail address"), validators=[DataRequired(), Length(max=254)])


class ResetForm(FlaskForm):
    new = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField(
        _l("New password again"),
        validators=[DataRequired(), EqualTo("new", message=_l("The passwords differ."))],
    )


class AckForm(FlaskForm):
    comment = StringField(_l("Comment"), validators=[Length(max=2000)])


class CodeForm(FlaskForm):
    code = StringField(
        _l("Code from your authenticator app, or a recovery code"),
        validators=[DataRequired(), Length(max=64)],
    )


class TwoFactorOffForm(FlaskForm):
    password = PasswordField(_l("Your password"), validators=[DataRequired(), Length(max=1024)])
    code = StringField(
        _l("Code from your authenticator app, or a recovery code"),
        validators=[DataRequired(), Length(max=64)],
    )
