"""``python -m rehearsal``: see :mod:`rehearsal.cli`."""

import sys

from rehearsal.cli import main

sys.exit(main())
