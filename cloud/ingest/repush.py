"""Re-pushing unacknowledged configs from the ingest worker.

Every ``every_s`` a thread runs :func:`cloud.services.configs.repush_due`,
publishing through the worker's own MQTT connection (the ingest account may
write every downlink topic; the scheduler has no broker account that may).
Several workers may each run it: the service claims each re-push with a
conditional update, so one of them publishes it.

Nothing here may stop the worker: failures are logged and counted
(``config_repushes``, ``config_repush_failures`` in :class:`Counters`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from cloud.ingest.counters import Counters
from cloud.ingest.ota import ClientPublisher
from cloud.services import configs

log = logging.getLogger(__name__)

DEFAULT_EVERY_S = 60.0


class ConfigRepusher:
    """Periodic driver of :func:`~cloud.services.configs.repush_due`;
    :meth:`start` once the MQTT client exists."""

    def __init__(
        self,
        sessions: Callable[[], Session],
        policy: configs.RepushPolicy,
        counters: Counters,
        every_s: float = DEFAULT_EVERY_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.policy = policy
        self.counters = counters
        self.every_s = every_s
        self.clock = clock
        self.client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, client: Any) -> None:
        self.client = client
        self._thread = threading.Thread(target=self._run, name="config-repush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.run_once()

    def run_once(self) -> configs.RepushResult:
        """One pass; logs what it re-pushed and why it stopped early."""
        try:
            with self.sessions() as session:
                result = configs.repush_due(
                    session, ClientPublisher(self.client), self.policy, now=self.clock()
                )
        except Exception as err:  # the boundary: the worker must go on
            log.exception("config re-push pass failed")
            result = configs.RepushResult(error=f"{type(err).__name__}: {err}")
        self.counters.count_repushes(repushed=len(result.repushed), failed=result.error is not None)
        if result.repushed:
            log.info("configs re-pushed (not acknowledged in time): %s", ", ".join(result.repushed))
        if result.error is not None:
            log.warning("config re-push stopped: %s", result.error)
        return result
