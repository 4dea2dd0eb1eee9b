"""Board HAL (MicroPython): ``hal.py`` is the one module that touches the hardware.

Imported only from :func:`edge.agent.run`, never at import time of the rest
of the package, so the agent core runs unchanged on hosts and in tests.
"""
