"""``python -m cloud.ingest``: run one ingest worker until SIGTERM/SIGINT.

Database and time-series settings come from :class:`cloud.config.Settings`
(instance file and ``MIMAMORI_*`` variables); broker and batching from the
options below. The MQTT password of the ingest account is read from
``$MIMAMORI_INGEST_MQTT_PASSWORD`` or ``--password-file``, never from the
command line (other users see it); without one the worker does not start.
Exit status: 0 after a clean stop, 2 for bad options or settings, 1 if the
database is unreachable or not migrated (or the time-series store is down).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType

import sqlalchemy as sa

from cloud import config, db
from cloud.config import Settings
from cloud.errors import CloudError, ConfigError
from cloud.ingest import metrics
from cloud.ingest.counters import Counters
from cloud.ingest.hooks import default_hooks
from cloud.ingest.ota import LEASE, OtaServer
from cloud.ingest.repush import DEFAULT_EVERY_S, ConfigRepusher
from cloud.ingest.service import BatchProcessor, IngestService, ServiceOptions
from cloud.ingest.worker import IngestWorker, WorkerOptions
from cloud.ingest.writer import RemoteService, service_from_settings
from cloud.ops.lease import Lease
from cloud.services.configs import RepushPolicy
from cloud.timeseries import make_store

# Not MIMAMORI_MQTT_PASSWORD: that is the web's account, in the same environment file.
PASSWORD_ENV = "MIMAMORI_INGEST_MQTT_PASSWORD"  # noqa: S105
log = logging.getLogger("cloud.ingest")


def parser() -> argparse.ArgumentParser:
    w, s = WorkerOptions(), ServiceOptions()
    p = argparse.ArgumentParser(
        prog="python -m cloud.ingest",
        description="Store uplink frames from the MQTT broker (shared subscription, "
        "acknowledged after the durable write).",
    )
    p.add_argument("--host", default=w.host, help="broker host (default %(default)s)")
    p.add_argument("--port", type=int, default=w.port, help="broker port (default %(default)s)")
    p.add_argument("--username", default=w.username, help="service account (default %(default)s)")
    p.add_argument(
        "--password-file",
        type=Path,
        help=f"file holding the MQTT password (default: ${PASSWORD_ENV})",
    )
    p.add_argument(
        "--client-id",
        default=f"ingest-{socket.gethostname()}",
        help="MQTT client id = persistent session; give each worker its own "
        "stable id (default %(default)s)",
    )
    p.add_argument(
        "--group", default=w.group, help="shared subscription group (default %(default)s)"
    )
    p.add_argument("--tls-ca", type=Path, help="CA file: connect with TLS")
    p.add_argument(
        "--batch-size",
        type=int,
        default=w.batch_size,
        help="messages per transaction (default %(default)s)",
    )
    p.add_argument(
        "--batch-ms",
        type=int,
        default=w.batch_ms,
        help="longest wait to fill a batch (default %(default)s)",
    )
    p.add_argument(
        "--receive-maximum",
        type=int,
        default=w.receive_maximum,
        help="unacknowledged messages the broker may send (default %(default)s)",
    )
    p.add_argument(
        "--session-expiry",
        type=int,
        default=w.session_expiry_s,
        help="seconds the broker keeps the session while disconnected (default %(default)s)",
    )
    p.add_argument(
        "--historical-lag",
        type=float,
        default=s.historical_lag_s,
        help="frames older than this at receipt are historical (default %(default)s s)",
    )
    p.add_argument(
        "--birth-wait",
        type=float,
        default=s.birth_wait_s,
        help="how long data waits for the birth of its boot before it is parked and the "
        "terminal asked for a rebirth (default %(default)s s)",
    )
    p.add_argument(
        "--held-per-terminal",
        type=int,
        default=s.held_per_terminal,
        help="frames of one terminal that may wait for their birth unacknowledged; more are "
        "parked (held_over_limit) so one terminal cannot fill the receive window "
        "(default %(default)s)",
    )
    p.add_argument(
        "--stats-interval",
        type=float,
        default=w.stats_interval_s,
        help="seconds between counter log lines (default %(default)s)",
    )
    p.add_argument("--stats-file", type=Path, help="also write the counters there as JSON")
    p.add_argument(
        "--ota-advance",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between two passes of the update rollouts' driver (docs/ota.md; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--ota-lease",
        type=float,
        default=15.0,
        metavar="S",
        help="one worker at a time drives the rollouts; after this long without "
        "renewing (a dead worker), another takes over; at least twice --ota-advance "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--config-repush-every",
        type=float,
        default=DEFAULT_EVERY_S,
        metavar="S",
        help="seconds between two looks for configs not acknowledged within "
        "MIMAMORI_CONFIG_ACK_DEADLINE_S, which are then published again "
        "(docs/configuration.md; default: %(default)s)",
    )
    p.add_argument(
        "--no-alarms",
        action="store_true",
        help="do not call the alarm engine (benchmarks, diagnosis)",
    )
    p.add_argument(
        "--no-forwarding", action="store_true", help="do not queue samples for customers' servers"
    )
    p.add_argument(
        "--single-process",
        action="store_true",
        help="store in the receiving process instead of a writer process of its "
        "own (slower; for debugging)",
    )
    p.add_argument("--log-level", default="INFO", help="default %(default)s")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (default: none)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics listener (default %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.load()
        options = WorkerOptions(
            host=args.host,
            port=args.port,
            username=args.username,
            password=config.secret(args.password_file, PASSWORD_ENV, "--password-file"),
            client_id=args.client_id,
            group=args.group,
            tls_ca=args.tls_ca,
            batch_size=args.batch_size,
            batch_ms=args.batch_ms,
            receive_maximum=args.receive_maximum,
            session_expiry_s=args.session_expiry,
            stats_interval_s=args.stats_interval,
            stats_file=args.stats_file,
        )
        service_options = ServiceOptions(
            historical_lag_s=args.historical_lag,
            birth_wait_s=args.birth_wait,
            held_per_terminal=args.held_per_terminal,
        )
        policy = RepushPolicy(
            timedelta(seconds=settings.config_ack_deadline_s),
            timedelta(seconds=settings.config_repush_max_interval_s),
        )
        if args.config_repush_every <= 0:
            raise ConfigError("--config-repush-every: must be above 0")
        if args.ota_advance <= 0:
            raise ConfigError("--ota-advance: must be above 0")
        if args.ota_lease < 2 * args.ota_advance:
            # renewed once a pass: a shorter lease would lapse between passes
            raise ConfigError("--ota-lease: at least twice --ota-advance")
        hooks = default_hooks(alarms=not args.no_alarms, forwarding=not args.no_forwarding)
    except (ConfigError, ValueError) as err:
        log.error("%s", err)
        return 2
    engine = db.make_engine(settings.database_url, echo=settings.sql_echo)
    try:
        db.require_current(engine)
        store = make_store(settings, engine)
        store.prepare()
        service: BatchProcessor
        if args.single_process:
            service = IngestService(db.session_factory(engine), store, hooks, service_options)
        else:
            engine.dispose()  # the writer opens its own connections
            service = RemoteService(
                functools.partial(
                    service_from_settings,
                    settings,
                    service_options,
                    not args.no_alarms,
                    not args.no_forwarding,
                )
            )
    except (CloudError, sa.exc.SQLAlchemyError) as err:
        log.error("storage not ready: %s", err)
        return 1
    counters = Counters()
    # Chunks and rollout waves of over-the-air updates (its own connections).
    ota_engine = db.make_engine(settings.database_url, echo=settings.sql_echo)
    # The pid too: a restarted worker waits out its predecessor's lease
    # rather than sharing it with a process that might still be alive.
    lease = Lease(ota_engine, f"{options.client_id} pid {os.getpid()}", args.ota_lease, name=LEASE)
    ota_server = OtaServer(db.session_factory(ota_engine), advance_s=args.ota_advance, lease=lease)
    # Pending configs past their ack deadline, published again (the same engine:
    # one short transaction per re-push, at most once a minute).
    repusher = ConfigRepusher(
        db.session_factory(ota_engine), policy, counters, every_s=args.config_repush_every
    )
    worker = IngestWorker(service, options, counters, ota=ota_server, repush=repusher)
    if args.metrics_port is not None:
        metrics.serve_ingest(counters, args.metrics_port, args.metrics_host)
        log.info("metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: finishing the current batch", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "ingest %s on %s:%d, group %s, %s time series",
        options.client_id,
        options.host,
        options.port,
        options.group,
        settings.timeseries_backend,
    )
    try:
        worker.run()
    finally:
        if isinstance(service, RemoteService):
            service.close()
        engine.dispose()
        ota_engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
