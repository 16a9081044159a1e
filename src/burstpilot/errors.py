"""Errors that the command line turns into a clear message and a non-zero exit."""


class BurstpilotError(Exception):
    """A user-facing error: bad input, a missing file, an unreachable endpoint.

    The message must say what is wrong and where (file, line, field); the CLI prints
    it without a traceback and exits with ``exit_code``.
    """

    exit_code = 2
