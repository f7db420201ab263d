"""The few lines of a server's output that explain why it failed a gate.

In order of preference: a Python traceback (its last frames, each as one line with its
code, and the exception; what caused it when exceptions are chained); gunicorn's reason
(`Reason: App failed to load.`), kept beside either; else the first lines that say error,
exception, fatal or failed; else the last lines. Bounded (MAX_LINES lines of at most WIDTH
characters) and plain text: colour codes and other control characters are dropped, and
nothing in it is ever markup."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINES = 4
WIDTH = 160
FRAMES = 2  # the last frames of a traceback worth quoting

_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = {
    "The above exception was the direct cause of the following exception:": "caused by",
    "During handling of the above exception, another exception occurred:": "while handling",
}
_FRAME = re.compile(r'^\s+File "[^"]*", line \d+(?:, in .*)?$')
_MARKERS = re.compile(r"^\s*[\^~]+\s*$")  # Python 3.11+ underlines the code of a frame
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")  # colours, cursor moves, CR
# gunicorn's default log format: [2024-05-02 10:11:12 +0000] [4321] [ERROR] message
_GUNICORN = re.compile(r"^\[\d{4}-\d\d-\d\d[ T][\d:.]+(?: ?[+-]\d{2}:?\d{2}|Z)?\] \[\d+\] \[[A-Z]+\] ")
_REASON = re.compile(r"^Reason: ")  # gunicorn's master, halting: "Worker failed to boot.", "App failed to load."
_ERRORISH = re.compile(r"error|exception|fatal|failed|panic", re.IGNORECASE)


@dataclass
class _Traceback:
    frames: list[str] = field(default_factory=list)  # File "...", line N, in f: code
    exception: str = ""


def error_lines(text: str, strip: tuple[str, ...] = ()) -> list[str]:
    """The lines of `text` that explain a failure (see the module's docstring). `strip`:
    path prefixes to drop wherever they appear (a server's root: its paths then read as
    the project's, `app/server.py`)."""
    lines = []
    for raw in text.splitlines():
        line = _CONTROL.sub("", raw.expandtabs()).rstrip()
        for prefix in strip:
            line = line.replace(prefix, "")
        lines.append(_GUNICORN.sub("", line))
    reasons = [line for line in lines if _REASON.match(line)][:1]
    chain = _first_chain(lines)
    if chain:
        final = chain[-1][1]
        tail = [final.exception]
        if len(chain) > 1:
            tail.append(f"{chain[1][0]}: {chain[0][1].exception}")
        tail += reasons
        picked = final.frames[-max(1, min(FRAMES, MAX_LINES - len(tail))):] + tail
    else:
        errors = [line.strip() for line in lines if _ERRORISH.search(line) and line not in reasons]
        picked = errors[: MAX_LINES - len(reasons)] + reasons
        if not picked:
            picked = [line.strip() for line in lines if line.strip()][-MAX_LINES:]
    return [_cut(line) for line in picked if line][:MAX_LINES]


def _first_chain(lines: list[str]) -> list[tuple[str, _Traceback]]:
    """The first traceback of the output and those chained to it, cause first, each with
    how it follows the one before ("caused by", "while handling")."""
    start = next((i for i, line in enumerate(lines) if line.strip() == _TRACEBACK or _FRAME.match(line)), None)
    if start is None:  # (a SyntaxError prints a frame without the header)
        return []
    chain = []
    link, index = "", start
    while True:
        traceback, index = _read_traceback(lines, index)
        chain.append((link, traceback))
        following = [i for i in range(index, len(lines)) if lines[i].strip()][:2]
        if len(following) < 2 or lines[following[0]].strip() not in _CHAINED or lines[following[1]].strip() != _TRACEBACK:
            return chain
        link, index = _CHAINED[lines[following[0]].strip()], following[1]


def _read_traceback(lines: list[str], index: int) -> tuple[_Traceback, int]:
    """One traceback from its header (or its first frame): returns it and the index after
    its exception line."""
    traceback = _Traceback()
    if lines[index].strip() == _TRACEBACK:
        index += 1
    code_expected = False
    while index < len(lines):
        line = lines[index]
        if _FRAME.match(line):
            traceback.frames.append(line.strip())
            code_expected = True
        elif line[:1].isspace() or not line:
            if code_expected and line.strip() and not _MARKERS.match(line):
                traceback.frames[-1] += f": {line.strip()}"
            code_expected = False
        else:
            traceback.exception = line.strip()
            return traceback, index + 1
        index += 1
    return traceback, index


def _cut(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"
