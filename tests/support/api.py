"""Helpers for the REST API tests: bearer tokens for the web test world's users."""

from __future__ import annotations

from typing import Any

from cloud.api import auth
from cloud.models import User, utcnow
from cloud.services.scope import Viewer
from tests.support.web import World

USERS = ("operator", "installer", "admin_a", "viewer_a", "admin_b")


def issue_tokens(world: World) -> dict[str, str]:
    """A fresh API token for every user of the world (as each would make their own)."""
    tokens = {}
    with world.session() as s:
        for who in USERS:
            user = s.get(User, world.ids[who])
            assert user is not None
            # Made now (not at the world's T0): a token expires 90 days on.
            tokens[who] = auth.issue(s, Viewer.of(user), user.id, now=utcnow(), ip=None)
    return tokens


def bearer(token: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}
