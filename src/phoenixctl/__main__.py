"""`python -m phoenixctl`: the `phoenix` command."""

import sys

from .cli import main

sys.exit(main())
