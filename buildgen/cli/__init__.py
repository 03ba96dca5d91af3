"""The command line: `buildgen VERB ...` (see README.md, "Commands")."""

from buildgen.cli.app import main

__all__ = ["main"]
