"""``python -m tests.support.faults DIR SEQ``: the power-loss test's outbox writer."""

import sys

from tests.support.faults.power import outbox_writer

outbox_writer(sys.argv[1], int(sys.argv[2]))
