"""The save-time check of webhook and forwarding URLs (server-side request forgery).

The rule itself, and the check at connect time, are in
:mod:`cloud.notify.netguard`; here it becomes the error a form shows.
"""

from __future__ import annotations

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
