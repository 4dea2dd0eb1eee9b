"""Password-reset mail, sent off the request.

A reset request must answer the same way, in the same time, whether or not
the address has an account: a page that answers later for real accounts
(because it waited for the mail server) tells an attacker which addresses
exist. So the request only records the request and queues a job, for known
and unknown addresses alike; one background thread per web process makes
the link and hands the mail to the server.

A job lost with its process (a restart in the seconds between request and
mail) costs the user a second request; nothing else depends on it. The
thread starts on first use, so it is created in the process that serves
(after a pre-forking server has forked).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from flask import Flask

log = logging.getLogger(__name__)

Job = Callable[[], None]


class ResetMails:
    """A queue of mail jobs and the thread that runs them inside ``app``'s context."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Job | None) -> None:
        """Queue ``job`` (None: nothing to send, queued all the same)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="reset mail", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def join(self, timeout: float) -> bool:
        """Wait until every queued job has run; False on timeout (tests, shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._jobs.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is not None:
                    with self.app.app_context():
                        job()
            except Exception:  # a failed mail must not end the thread
                log.exception("password reset mail failed")
            finally:
                self._jobs.task_done()
