"""Over-the-air updates: the names and the signed message both sides agree on.

docs/ota.md is the specification. A bundle's ``manifest.json`` lists every
file with its SHA-256 and size; ``manifest.sig`` holds
``{"alg": "ed25519", "key": <public key hex>, "sig": <signature hex>}``
over :func:`signed_message` of the manifest's SHA-256. Terminals trust the
public keys listed in the ``ota_keys.json`` (``{"keys": [hex, ...]}``) of
the firmware they run.
"""

MANIFEST = "manifest.json"
SIG = "manifest.sig"
KEYS = "ota_keys.json"
LOADER = "main.py"  # the boot loader: never sent over the air
CONTEXT = b"mimamori-bundle-v1\n"

# otastat states, in the order a terminal goes through them
DOWNLOADING = "downloading"
VERIFYING = "verifying"
INSTALLED = "installed"
CONFIRMED = "confirmed"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
STATES = (DOWNLOADING, VERIFYING, INSTALLED, CONFIRMED, ROLLED_BACK, FAILED)
FINAL = (CONFIRMED, ROLLED_BACK, FAILED)


def signed_message(manifest_sha256):
    """The bytes the operator's key signs: CONTEXT + the 32-byte manifest digest."""
    return CONTEXT + bytes(manifest_sha256)
