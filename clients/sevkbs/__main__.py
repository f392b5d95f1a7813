"""``python -m sevkbs``: the key broker's command line (see :mod:`sevkbs.cli`)."""

import sys

from sevkbs.cli import main

sys.exit(main())
