"""The broker follows the terminal table: the reconciler and what it wants.

:mod:`cloud.brokersync.wanted` reads the terminal table into the accounts
the broker should have; :mod:`cloud.brokersync.reconciler` makes the
broker's dynamic-security plugin match, at start, within a second or two of
every change, and fully every few minutes (a broker replaced with an empty
state is refilled). ``python -m cloud.brokersync`` runs it.
"""
