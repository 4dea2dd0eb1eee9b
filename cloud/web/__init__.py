"""The web site for customers, installers and operators (Flask).

Build it with :func:`create_app`; run it with ``python -m cloud.web`` or any
WSGI server pointing at ``cloud.web:create_app()``.
"""

from cloud.web.app import create_app

__all__ = ["create_app"]
