"""Business logic of the web site: functions taking a Session and plain values.

Nothing here imports Flask. Views translate requests into calls and
:mod:`cloud.web.errors` exceptions into responses; tests call these directly.
"""
