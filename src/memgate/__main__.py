"""`python -m memgate`: the command line (also what torchrun launches)."""

import sys

from .cli import main

sys.exit(main())
