"""`--json` output: written as it is, for machines, never through rich (its highlighter and
wrapping cost seconds on a 10,000-server plan, and loading rich alone costs a command's start)."""

from __future__ import annotations

import json
import sys


def print_json(data: object) -> None:
    """`data` as indented JSON on stdout, non-ASCII text kept as it is (as rich printed it)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
