"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class TiwbenchError(Exception):
    """An error caused by input or environment that the user can fix; no traceback is shown."""


class Interrupted(TiwbenchError):
    """SIGINT/SIGTERM arrived; the state was checkpointed and the same command resumes."""
