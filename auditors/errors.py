"""Errors that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class TrainguardError(Exception):
    """Any failure that should stop an audit with a clear message (exit code 2)."""


class AuditInputError(TrainguardError):
    """Bad input, located as precisely as we can: file, row (1-based line or record), field."""

    def __init__(self, message: str, *, path: object = None, row: int | None = None,
                 field: str | None = None):
        self.message = message
        self.path = path
        self.row = row
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [str(self.path)] if self.path is not None else []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return one_line(": ".join(where + [self.message]))


def one_line(text: str) -> str:
    """Column names, paths and values come from the dataset: escape line breaks and control
    characters (ANSI escapes included) so a message stays one line and is never
    interpreted by a terminal."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
