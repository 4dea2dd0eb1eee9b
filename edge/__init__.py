"""mimamori terminal (edge) package.

``FIRMWARE_VERSION`` is what the birth frame announces as ``fw`` and what the
installer's bundle manifest records (it parses this file, never imports it).
"""

import sys

FIRMWARE_VERSION = "0.1.0"

# Only a board's heap is short; elsewhere (the cloud, a fleet of virtual
# terminals in one process) other code may hold the same modules.
_UNLOADS = sys.implementation.name == "micropython"


def unload(*names):
    """Forget the modules ``names`` on MicroPython, so their code leaves the heap.

    A module loaded from a ``.mpy`` file keeps its bytecode, constants and
    functions on the heap for as long as it is imported; code a terminal
    runs only at boot or when the cloud sends a new configuration is
    imported then and unloaded after (docs/agent.md, "Memory"). The caller
    must hold no function, class or instance of these modules afterwards
    (set attributes to None: MicroPython keeps a ``del``-eted attribute's
    value in its slot); plain data they returned stays valid. Their qstrs stay interned (the
    interpreter never frees them). A later import loads a module afresh.
    Does nothing on CPython.
    """
    if not _UNLOADS:
        return
    for name in names:
        module = sys.modules.pop(name, None)
        dot = name.rfind(".")
        if module is None or dot < 0:
            continue
        package = sys.modules.get(name[:dot])
        # "from edge import config" also made it an attribute of the package
        if package is not None and getattr(package, name[dot + 1 :], None) is module:
            delattr(package, name[dot + 1 :])
