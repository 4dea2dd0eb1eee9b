"""mimamori cloud: relational model, time-series storage and (later) the web, ingest and
scheduler roles.

Nothing happens at import time; each role builds what it needs from a
:class:`cloud.config.Settings` (the Flask app factory is :func:`cloud.app.create_app`).
"""
