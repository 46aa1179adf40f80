"""User-facing errors.

Every mistake a user can make (a malformed line, a missing file, a wrong config value) is raised
as a :class:`UserError`. The command-line entry points catch it, print its one-line message and
exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """A problem with the user's input, reported as one line: ``where: what is wrong``."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = self.message if self.field is None else f"field '{self.field}': {self.message}"
        return f"{where}: {what}" if where else what
