"""Errors for the user, shared by every subcommand."""


class CommandError(Exception):
    """An error for the user: printed as one line, exit status 1 (or `status`)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
