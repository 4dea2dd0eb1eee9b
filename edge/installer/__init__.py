"""Installer tooling for mimamori terminals (CPython only, never on the board).

``mimamori-install build`` compiles the device code into a bundle,
``flash`` copies a bundle and a site configuration to a board with mpremote
and verifies every file by its SHA-256 on the board, ``probe`` scans the
RS-485 bus for sensors with the terminal's own Modbus master.
See ``docs/installer.md``.
"""
