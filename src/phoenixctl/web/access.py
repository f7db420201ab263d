"""Who may reach the dashboard: the address it listens on (loopback unless a token is given)
and the token, read from the command line or a file. Light on purpose: the command checks
its options with this before anything heavy loads."""

from __future__ import annotations

import ipaddress
from pathlib import Path


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`; any other name or address counts as beyond loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host in brackets: `[::1]:8765`); ValueError with the reason."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{listen!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{port!r} is not a port (0 to 65535; 0 picks a free one)")
    return host.strip("[]"), int(port)


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The token given, or the first line of the token file; ValueError naming what is wrong."""
    if token is not None and token_file is not None:
        raise ValueError("give --token or --token-file, not both")
    if token_file is not None:
        try:
            lines = token_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--token-file {token_file}: cannot read it ({exc.__class__.__name__})") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"--token-file {token_file}:1: the file holds no token")
        return token
    if token is not None and len(token.strip()) < 8:
        raise ValueError("--token: at least 8 characters")
    return token.strip() if token is not None else None
