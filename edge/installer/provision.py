"""Register a terminal with the cloud and write its site file (``provision``).

Steps, each through the REST API with the installer's bearer token:

1. ``GET /terminals/{id}``: if it exists it must belong to ``--customer``;
   if not, ``POST /terminals`` registers it for that customer;
2. ``POST /terminals/{id}/provision``: the cloud makes the terminal's MQTT
   password (once; ``rotate`` replaces it) and answers a site file skeleton
   with the broker address and the credentials;
3. merge with the existing site file, if any (its wiring and tuning stay;
   terminal id, broker and credentials are replaced), check the result with
   the terminal's own validator (:mod:`edge.installer.siteconfig`) and write
   it atomically, readable by the owner only.

Failures raise :class:`ProvisionError` with one line an installer can act
on; the password is never in a message. A failure after step 2 leaves the
credentials made in the cloud: run again with ``rotate`` to replace them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.installer import siteconfig
from edge.installer.errors import InstallerError, SiteConfigError

TIMEOUT_S = 15.0


class ProvisionError(InstallerError):
    """The cloud refused or could not be reached, or the site file cannot be written."""


class Api:
    """A tiny JSON client of ``/api/v1`` (urllib: no extra dependency on the
    installer's laptop)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = TIMEOUT_S) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ProvisionError("--api must be an http:// or https:// URL")
        if not token:
            raise ProvisionError("an API token is required (--token or $MIMAMORI_API_TOKEN)")
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for any HTTP status; ProvisionError if unreachable."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = self.base + path  # scheme checked in __init__: http(s) only
        req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _json(err.read())
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ProvisionError("cannot reach %s: %s" % (self.base, reason)) from err


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _fail(what: str, status: int, body: dict[str, Any]) -> ProvisionError:
    error = body.get("error") or {}
    return ProvisionError(
        "%s: HTTP %d %s: %s"
        % (what, status, error.get("code", "?"), error.get("message", "no detail"))
    )


def provision(
    api: Api,
    terminal_id: str,
    customer_id: int,
    site_out: Path,
    *,
    name: str = "",
    rotate: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:
    """Do the steps of the module docstring; return the site written (a dict)."""
    base = _existing(site_out)
    status, body = api.call("GET", "/terminals/%s" % terminal_id)
    if status == 404:
        status, body = api.call(
            "POST", "/terminals", {"id": terminal_id, "customer_id": customer_id, "name": name}
        )
        if status != 201:
            raise _fail("registering %s" % terminal_id, status, body)
        progress("registered %s for customer %d" % (terminal_id, customer_id))
    elif status == 200:
        if body.get("customer_id") != customer_id:
            raise ProvisionError(
                "terminal %s belongs to customer %s, not %d"
                % (terminal_id, body.get("customer_id"), customer_id)
            )
        progress("%s is registered already" % terminal_id)
    else:
        raise _fail("looking up %s" % terminal_id, status, body)
    status, cloud_site = api.call(
        "POST", "/terminals/%s/provision" % terminal_id, {"rotate": rotate}
    )
    if status != 201:
        raise _fail("provisioning %s" % terminal_id, status, cloud_site)
    progress("credentials %s for %s" % ("rotated" if rotate else "created", terminal_id))
    site = dict(base)
    site.update({k: cloud_site[k] for k in ("terminal_id", "broker", "credentials")})
    site.setdefault("wiring", cloud_site.get("wiring", []))
    try:
        siteconfig.check(site, str(site_out))
    except SiteConfigError as err:
        raise ProvisionError("the site file would be unusable: %s" % err) from err
    siteconfig.write(site_out, site, ProvisionError)
    progress("wrote %s" % site_out)
    return site


def _existing(path: Path) -> dict[str, Any]:
    """The current site file's content to keep (wiring, tuning), or {}."""
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProvisionError("existing site file %s is unreadable; move it away" % path) from err
    if not isinstance(value, dict):
        raise ProvisionError("existing site file %s is not a JSON object" % path)
    return value
