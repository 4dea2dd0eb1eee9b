"""``python -m edge.installer`` is the same as ``mimamori-install``."""

import sys

from edge.installer.cli import main

sys.exit(main())
