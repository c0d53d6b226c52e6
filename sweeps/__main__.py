"""`python -m lrsweep.sweeps ...` is the `sweeps` command (launched workers start this way)."""

import sys

from lrsweep.sweeps.cli import main

sys.exit(main())
