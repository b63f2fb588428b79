"""The project's error types.

Every error a user can cause derives from :class:`CtError`; its message is one sentence that
names the bad value, what was expected and what to do. The CLI prints it and exits with 2.
Anything else is an internal failure (exit code 1).
"""


class CtError(Exception):
    """Root of all user-facing errors (exit code 2)."""


class BadInputError(CtError):
    """An argument, path or identifier given by the user is wrong."""


class BadDataError(CtError):
    """A file on disk is unreadable, inconsistent, or not what the command needs."""


class BadCheckpointError(CtError):
    """A checkpoint is of the wrong kind, unsafe to load, or does not fit the model."""


class NotFoundError(BadInputError):
    """A series or file that was asked for does not exist."""


class OutputError(BadInputError):
    """A result could not be written where the user asked (no space, no permission, read-only)."""
