"""What every benchmark shares: the heading of its RESULTS.md section and the writing of it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def heading(title: str) -> list[str]:
    """Title, the command that produced the numbers, and the machine it ran on."""
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    command = "python " + " ".join([f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return [
        f"## {title}",
        "",
        f"Command: `{command}`  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {haproxy}  ",
    ]


def publish(lines: list[str], name: str, path: Path | None) -> None:
    """Print the section; with `path`, replace this benchmark's section of RESULTS.md."""
    section = "\n".join(lines)
    print(section)
    if path is None:
        return
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n\nEach section is written by its benchmark; numbers come from one run on one machine.\n\n"
    block = f"{start}\n{section}{end}\n"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) + 1 :]
    else:
        text += block
    path.write_text(text)
