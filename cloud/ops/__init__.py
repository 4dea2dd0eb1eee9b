"""Operations: the scheduler role and what it runs.

- :mod:`.scheduler` — ``python -m cloud.ops.scheduler``, one leader at a time
  (:mod:`.lease`), jobs in :mod:`.jobs`, slots in :mod:`.schedule`;
- :mod:`.backup` / :mod:`.fingerprint` — backups kept in generations, and a
  restore that proves itself exact;
- :mod:`.retention` / :mod:`.logfiles` — logs online, archived, then deleted;
- :mod:`.health` / :mod:`.availability` — component checks and SLA figures;
- :mod:`.billing` / :mod:`.invoice_docs` — monthly invoices in integer yen;
- :mod:`.reports` / :mod:`.report_docs` — monthly customer reports;
- :mod:`.announcements` — maintenance and failure notices via the ledger;
- :mod:`.cli` — ``python -m cloud.ops COMMAND``.

See ``docs/operations.md`` for the rules these implement.
"""
