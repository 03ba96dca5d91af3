"""The flags that choose a plan's images (--registry, --select) and the plan they choose: the
catalog's, for the verbs that need one (not `resolve` or `materialize`, which read the lockfile
alone)."""

from __future__ import annotations

import argparse

from buildgen.model.catalog import load_catalog
from buildgen.model.plan import Plan, make_plan


def add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """--registry and --select (`load_plan`)."""
    parser.add_argument(
        "--registry", metavar="PREFIX",
        help="image name prefix, overriding the catalog's 'registry' (e.g. 127.0.0.1:5000/evals)",
    )  # fmt: skip
    parser.add_argument(
        "--select", action="append", default=[], metavar="GLOB",
        help="only images whose key matches (repeatable), e.g. 'agents/*' or "
        "'benchmarks/swe-bench:django__*'",
    )  # fmt: skip


def load_plan(args: argparse.Namespace) -> Plan:
    """The plan of --catalog, under --registry, of the images --select chooses."""
    return make_plan(load_catalog(args.catalog), registry=args.registry, select=args.select)
