"""`python -m node`: the `corral` command (node/cli.py)."""

import sys

from .cli import main

sys.exit(main())
