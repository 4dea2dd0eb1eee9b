"""``python -m cloud.app``: serve the web site and the API with werkzeug's threaded server.

Good for the demo and small sites; behind a reverse proxy with TLS, set
``MIMAMORI_TRUSTED_PROXIES=1``. Larger sites run several processes under a
WSGI server (e.g. ``gunicorn 'cloud.app:create_app()'``) with a shared
``MIMAMORI_SECRET_KEY``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from werkzeug.serving import make_server

from cloud.app import create_app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app()
    server = make_server(args.host, args.port, app, threaded=True)
    logging.getLogger(__name__).info("serving on http://%s:%d/", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
