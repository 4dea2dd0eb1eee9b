"""The Flask application of the web role: the web site (:mod:`cloud.web`) and
the REST API (:mod:`cloud.api`), siblings over :mod:`cloud.services`.

Build it with :func:`create_app`; run it with ``python -m cloud.app`` or any
WSGI server pointing at ``cloud.app:create_app()``.
"""

from cloud.app.factory import create_app

__all__ = ["create_app"]
