"""The two consoles `phoenix` prints on: results on stdout, messages and errors on stderr.

Markup is off everywhere: what we print comes from specs, servers' logs and the state store,
and is shown as plain text ("[/x]" in a server's output is text, never a style); the few
styled words are built as rich Text. Only rich's console is loaded here (the commands load
this module when they print, so `phoenix --help` never loads rich)."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True, markup=False)
if not out.is_terminal:
    out = Console(highlight=False, soft_wrap=True, markup=False, width=200)  # tables readable in CI logs
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
