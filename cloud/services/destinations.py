"""The save-time check of webhook and forwarding URLs (server-side request forgery).

The rule itself, and the check at connect time, are in
:mod:`cloud.notify.netguard`; here it becomes the error a form shows.
"""

from __future__ import annotations

from cloud.notify import chat
from cloud.notify.errors import PermanentDeliveryError
from cloud.notify.netguard import AddressPolicy, Refused
from cloud.services.errors import N_, Invalid


def check_destination(addresses: AddressPolicy, url: str) -> None:
    """Raise :class:`Invalid` unless ``url``'s host resolves to public
    addresses or the operator allows it. The message is the same for every
    refusal (not found, private, loopback, metadata...): it tells nothing
    about the network."""
    try:
        addresses.check_url(url)
    except Refused as err:
        raise Invalid(
            N_(
                "The address must be a public internet address. For a receiver on your own "
                "network, ask the operator to allow it."
            )
        ) from err


# Chat schemes whose host part is the server (the others name a service's
# fixed host and carry tokens where the host would be).
_SELF_HOSTED = {"json": "http", "jsons": "https", "gotify": "http", "gotifys": "https"}
_NTFY = {"ntfy": "http", "ntfys": "https"}


def check_chat(addresses: AddressPolicy, url: str) -> None:
    """Raise :class:`Invalid` unless Apprise can use ``url`` and, for a
    self-hosted service, its host passes :func:`check_destination`. Every
    chat send is guarded again at connect time (:mod:`cloud.notify.chat`)."""
    try:
        plugin = chat.parse(url)
    except PermanentDeliveryError as err:
        raise Invalid(N_("This chat address cannot be used: %(reason)s"), reason=str(err)) from err
    scheme = url.split("://", 1)[0].lower()
    host = str(getattr(plugin, "host", "") or "")
    web = _SELF_HOSTED.get(scheme)
    if web is None and scheme in _NTFY and ("." in host or ":" in host):
        web = _NTFY[scheme]  # ntfy://topic alone means the public ntfy.sh
    if web is not None and host:
        port = getattr(plugin, "port", None)
        check_destination(addresses, f"{web}://{host}{f':{port}' if port else ''}/")
