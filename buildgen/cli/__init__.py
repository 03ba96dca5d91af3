"""The command line: `buildgen VERB ...` (README.md, "Commands").

One module per verb (`buildgen/cli/<verb>.py`): it adds its flags to its parser, turns them into
the typed options of the part the verb belongs to (build, release, crane), calls that part's one
function and prints what it returns. `main` imports the module of the verb that runs and no
other: `resolve`, which the crane runner runs before every eval, pays for no catalog, pydantic,
jinja2 or YAML.

Exit codes (DESIGN.md): 0 done, 1 the thing checked is not so, 2 bad input, 3 an external tool
or registry failed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Protocol, cast

from buildgen import __version__
from buildgen.cli.common import Formatter, Parser, add_common_flags
from buildgen.errors import BuildgenError, CatalogError, UsageError

DESCRIPTION = """\
buildgen turns catalog.yaml (benchmarks, agents, model gateways, the crane runner and
pre-baked combinations) into docker-bake files and builds them with docker buildx bake.

  buildgen validate            check the catalog; every error as FILE:LINE:COL: message
  buildgen plan                the images the catalog expands to (--json for machines)
  buildgen bake                render the bake files and run docker buildx bake on them
  buildgen publish             merge per-platform pushes into tagged multi-arch indexes
  buildgen lock                pin digests in images.lock.json (--check, --diff OLD)
  buildgen resolve             digest-pinned references for crane mode, from the lockfile
  buildgen matrix              a CI job matrix: one entry per (platform, shard)
  buildgen materialize         crane mode: fuse benchmark, agent and gateway into one rootfs
  buildgen schema              the catalog's JSON Schema

exit codes: 0 done, 1 check failed, 2 bad input, 3 an external tool failed
"""

# The verbs and their one-line help, here so that `buildgen --help` imports no verb.
VERBS = {
    "validate": "check the catalog and the files it names",
    "plan": "show the images the catalog expands to",
    "bake": "render the bake files and run docker buildx bake",
    "publish": "merge per-platform pushes into multi-arch indexes and tag them",
    "lock": "write, check or diff the digest lockfile images.lock.json",
    "resolve": "print the digest-pinned references crane mode needs",
    "materialize": "crane mode: fuse benchmark, agent and gateway images into one rootfs, "
    "by digest",
    "matrix": "a CI job matrix: one entry per (platform, shard)",
    "schema": "print the catalog's JSON Schema",
}


class Verb(Protocol):
    """What each module buildgen/cli/<verb>.py has: DESCRIPTION (its --help text), and
    optionally USAGE and `add_arguments` (its flags beyond -v, -q and --catalog)."""

    DESCRIPTION: str

    def run(self, args: argparse.Namespace, passthrough: list[str]) -> int: ...


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run a verb and turn buildgen's own errors into messages and exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return main_inner(args)
    except CatalogError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        sys.stderr.write(f"buildgen: {exc.args[0]}\n")
        return exc.exit_code
    except BuildgenError as exc:
        sys.stderr.write(f"buildgen: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("buildgen: interrupted\n")
        return 130
    except Exception as exc:
        # The registry client's errors (exit 3). The registry package may import nothing of
        # buildgen (so RegistryError is no BuildgenError), and the verbs that never touch it
        # (validate, plan, schema, matrix: httpx is most of buildgen's start-up) do not load
        # it, so a RegistryError can only be raised once its module is loaded.
        errors = sys.modules.get("buildgen.registry.errors")
        if errors is None or not isinstance(exc, errors.RegistryError):
            raise
        sys.stderr.write(f"buildgen: error: {exc}\n")
        return int(exc.exit_code)


def main_inner(argv: list[str]) -> int:
    """Parse `argv` and run the verb; raises BuildgenError on failure."""
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    # buildgen's own options take no value: the first other word is the verb.
    named = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser([named] if named in VERBS else []).parse_args(argv)
    _setup_logging(args.verbose - args.quiet)
    if passthrough and args.verb != "bake":
        raise UsageError("arguments after '--' are passed to docker buildx bake: only for 'bake'")
    return _verb(args.verb).run(args, passthrough)


def build_parser(verbs: Iterable[str] = VERBS) -> argparse.ArgumentParser:
    """buildgen's parser: every verb listed, with the flags of `verbs` (default: all of them),
    for which it imports their modules."""
    parser = Parser(prog="buildgen", description=DESCRIPTION, formatter_class=Formatter)
    parser.add_argument("--version", action="version", version=f"buildgen {__version__}")
    subparsers = parser.add_subparsers(
        dest="verb", metavar="VERB", required=True, parser_class=Parser
    )
    with_flags = set(verbs)
    for name, help_line in VERBS.items():
        verb = subparsers.add_parser(name, help=help_line, formatter_class=Formatter)
        if name in with_flags:
            module = _verb(name)
            verb.description = module.DESCRIPTION
            verb.usage = getattr(module, "USAGE", None)
            add_common_flags(verb)
            getattr(module, "add_arguments", lambda parser: None)(verb)
    return parser


def _verb(name: str) -> Verb:
    return cast(Verb, importlib.import_module(f"{__name__}.{name}"))


def _setup_logging(level: int) -> None:
    logging.basicConfig(
        format="%(message)s",
        stream=sys.stderr,
        level={-1: logging.WARNING, 0: logging.INFO}.get(max(-1, min(level, 1)), logging.DEBUG),
        force=True,
    )
    # httpx logs every request at INFO: that is our debug level, not the user's.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level > 1 else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # buildx's own output, which build/bake.py passes through this logger, shows at -q too.
    logging.getLogger("buildgen.build.bake.buildx").setLevel(logging.INFO)
