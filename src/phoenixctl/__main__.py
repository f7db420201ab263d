"""`python -m phoenixctl`: the `phoenix` command."""

from .cli import entry

entry()
