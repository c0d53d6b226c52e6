"""`python -m sweeps ...` is the `sweeps` command (launched workers start this way)."""

import sys

from sweeps.cli import main

sys.exit(main())
