"""The error hierarchy: every failure buildgen reports is one of these, each with its exit code."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a file, 1-based, as editors and compilers print it."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, and where it is."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class BuildgenError(Exception):
    """Base of all errors buildgen reports without a traceback."""

    exit_code = 1


class CheckFailed(BuildgenError):
    """The thing checked is not so (e.g. the lockfile is stale)."""

    exit_code = 1


class UsageError(BuildgenError):
    """Bad flags or arguments."""

    exit_code = 2


class CatalogError(BuildgenError):
    """The catalog (or a file it names) is invalid; carries every problem found."""

    exit_code = 2

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = sorted(
            problems, key=lambda p: (p.location.path, p.location.line, p.location.column)
        )
        count = len(self.problems)
        super().__init__(f"{count} error{'s' if count != 1 else ''} in the catalog")

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class ExternalToolError(BuildgenError):
    """An external tool (docker buildx, a registry) failed."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        command: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)
