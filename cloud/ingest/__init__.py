"""Cloud ingest: uplink frames from MQTT into the databases.

- :mod:`.service`: the business logic (a Session, a time-series store and
  messages in; outcomes out; no MQTT, no Flask);
- :mod:`.worker`: the MQTT client (shared subscription, persistent session,
  batches, acknowledgement after the durable write);
- :mod:`.counters`: the worker's counters as plain data;
- ``python -m cloud.ingest --help``: run a worker.
"""

from cloud.ingest.counters import Counters
from cloud.ingest.hooks import Hooks, default_hooks
from cloud.ingest.service import BatchResult, Inbound, IngestService, Outcome, ServiceOptions

__all__ = [
    "BatchResult",
    "Counters",
    "Hooks",
    "Inbound",
    "IngestService",
    "Outcome",
    "ServiceOptions",
    "default_hooks",
]
