"""``python -m cloud.broker`` entry point."""

from __future__ import annotations

import sys

from cloud.broker.cli import main

sys.exit(main())
