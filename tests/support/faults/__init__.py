"""The fault tier's moving parts: a fleet of real terminal agents, killable
ingest workers and databases, and the loss/duplicate accounting.

- :class:`AgentFleet` runs N terminals, each the real agent
  (:class:`edge.agent.Agent`) in a thread with simulated sensors in
  process and a flash outbox of its own, and keeps a copy of every frame
  each one queued. Duplicates on the wire are expected; the cloud
  deduplicates on (terminal, boot, seq).
- :class:`IngestProcess` is ``python -m cloud.ingest`` as a child process
  that can be SIGKILLed and restarted with the same client id (session).
- :class:`AlarmSweeper` runs the scheduler's alarm sweep against the test's
  database on a short period.
- :class:`KillablePostgres` is the test PostgreSQL with a SIGKILL of the
  postmaster and a restart on the same port and data directory.
- :class:`CuttableLink` relays the terminals' TCP link to the broker and
  can cut it; :class:`ImpairedLink` makes that relay slow and lossy
  (delay, jitter, a rate cap, stalls, resets) in userspace, for want of
  the kernel's netem.
- :func:`account` counts queued / stored once / still on flash / missing /
  duplicated against the database and the terminals' outboxes;
  :class:`Report` prints the figures and writes ``build/faults/<name>.json``.

``MIMAMORI_PROFILE=long`` (``make soak``) scales fleets, kills and fuzz runs.

One module per concern: :mod:`.common` (profile, terminal ids, broker),
:mod:`.agents`, :mod:`.processes` (ingest, sweep, PostgreSQL),
:mod:`.accounting`, :mod:`.network` and :mod:`.power`
(``python -m tests.support.faults DIR SEQ`` is the power-loss test's writer).
Tests use the names below as ``F.<name>``.
"""

from tests.support.faults.accounting import (
    Report,
    account,
    engine,
    first_arrivals,
    random_pause,
    receipt_count,
    receipt_keys,
    settle,
)
from tests.support.faults.agents import AgentFleet
from tests.support.faults.common import (
    INGEST_PASSWORD,
    LONG,
    ROOT,
    START_S,
    WEB_PASSWORD,
    Key,
    accounts,
    kill_broker,
    profile,
    start_broker,
    tids,
)
from tests.support.faults.network import CuttableLink, ImpairedLink, Observer
from tests.support.faults.power import outbox_writer
from tests.support.faults.processes import AlarmSweeper, IngestProcess, KillablePostgres

__all__ = [
    "INGEST_PASSWORD",
    "LONG",
    "ROOT",
    "START_S",
    "WEB_PASSWORD",
    "AgentFleet",
    "AlarmSweeper",
    "CuttableLink",
    "ImpairedLink",
    "IngestProcess",
    "Key",
    "KillablePostgres",
    "Observer",
    "Report",
    "account",
    "accounts",
    "engine",
    "first_arrivals",
    "kill_broker",
    "outbox_writer",
    "profile",
    "random_pause",
    "receipt_count",
    "receipt_keys",
    "settle",
    "start_broker",
    "tids",
]
