"""What the verbs share: the parser classes, the flags several of them take, and turning those
flags into typed values. Light on purpose: every verb imports it, `resolve` too."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from buildgen.errors import UsageError
from buildgen.model.defaults import DEFAULT_CATALOG
from buildgen.model.platforms import platform_problem

if TYPE_CHECKING:
    from buildgen.registry import RegistryOptions


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 itself; keep the message format and our exit code for bad flags.
        self.print_usage(sys.stderr)
        raise UsageError(message)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """-v, -q and --catalog: every verb's."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="only warnings and errors")
    parser.add_argument(
        "--catalog", type=Path, default=Path(DEFAULT_CATALOG), metavar="PATH",
        help=f"the catalog file (default: ./{DEFAULT_CATALOG})",
    )  # fmt: skip


def add_switches(parser: argparse.ArgumentParser, switches: dict[str, str]) -> None:
    """Flags that take no value (store_true): flag -> its help."""
    for flag, help_text in switches.items():
        parser.add_argument(flag, action="store_true", help=help_text)


def add_lock_flag(parser: argparse.ArgumentParser) -> None:
    """--lock PATH: the verbs that read or write the lockfile."""
    parser.add_argument(
        "--lock", type=Path, metavar="PATH",
        help="the lockfile (default: images.lock.json next to the catalog)",
    )  # fmt: skip


def add_eval_flags(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """--benchmark, --task, --agent, --gateway and --platform: the images of one eval."""
    parser.add_argument("--benchmark", required=required, metavar="B")
    parser.add_argument("--task", metavar="T", help="a task of a per-task benchmark")
    parser.add_argument("--agent", required=required, metavar="A")
    parser.add_argument("--gateway", metavar="G")
    parser.add_argument("--platform", required=required, metavar="P", help="e.g. linux/amd64")


def add_registry_flags(parser: argparse.ArgumentParser) -> None:
    """How the verbs that talk to a registry reach it (`registry_options`)."""
    parser.add_argument(
        "--insecure-registry", action="append", default=[], metavar="HOST",
        help="allow plain http to HOST[:PORT] (loopback always is)",
    )  # fmt: skip
    parser.add_argument(
        "--ca-bundle", metavar="PEM", help="verify registry TLS with these CA certificates"
    )


def registry_options(args: argparse.Namespace) -> RegistryOptions:
    """The registry client's options from --insecure-registry and --ca-bundle."""
    from buildgen.registry import RegistryOptions  # only the verbs that talk to a registry

    return RegistryOptions(insecure=tuple(args.insecure_registry), ca_bundle=args.ca_bundle)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def checked_platform(platform: str) -> str:
    """`platform` (os/arch[/variant]) when buildgen knows it, else bad input naming --platform."""
    problem = platform_problem(platform)
    if problem:
        raise UsageError(f"--platform: {problem}")
    return platform
