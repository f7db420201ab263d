"""Errors that reach the user as one line and an exit code, never a traceback."""


class PhoenixError(Exception):
    """A failure with a one-line reason for the user (exit code 1)."""

    exit_code = 1


class SpecError(PhoenixError):
    """Bad input: the spec file, a name or an option (exit code 2)."""

    exit_code = 2


class GateFailed(PhoenixError):
    """A new server did not pass one of its gates before its deadline."""

    def __init__(self, server_id: str, gate: str, reason: str, log=None):
        """`log`: the server's `LogExcerpt` (where its output is, what in it explains the
        failure), quoted at the end of the one line."""
        super().__init__(f"server {server_id} failed its {gate} gate: {reason}" + (f"; {log}" if log else ""))
        self.server_id = server_id
        self.gate = gate
        self.log = log
