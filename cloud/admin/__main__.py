"""``python -m cloud.admin`` = ``mimamori-admin``."""

import sys

from cloud.admin.cli import main

sys.exit(main())
