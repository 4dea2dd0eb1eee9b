"""Notifications: the ledger (outbox) writers, the delivery worker, mail and webhooks.

Import the submodules you need (:mod:`.ledger`, :mod:`.outbox`, :mod:`.mail`,
:mod:`.webhook`); this package imports nothing so that the ingest worker,
which only writes the ledger, does not load SMTP or HTTP code.
"""
