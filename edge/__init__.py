"""mimamori terminal (edge) package.

``FIRMWARE_VERSION`` is what the birth frame announces as ``fw`` and what the
installer's bundle manifest records (it parses this file, never imports it).
"""

FIRMWARE_VERSION = "0.1.0"
