"""``python -m cloud.ops``: operator commands (see :mod:`cloud.ops.cli`)."""

import sys

from cloud.ops.cli import main

sys.exit(main())
