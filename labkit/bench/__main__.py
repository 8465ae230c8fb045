"""``python -m labkit.bench worker|serve ...``: the bench's child processes (see :mod:`labkit.bench.child`)."""

import sys

from labkit.bench.child import main

sys.exit(main())
