"""`buildgen schema`: the catalog's JSON Schema, generated from its models."""

from __future__ import annotations

import argparse
import json
import sys

from buildgen.cli.common import add_common_flags
from buildgen.model.catalog import catalog_schema


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Print the JSON Schema of catalog.yaml (for editors: see README)."
    add_common_flags(parser)


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    sys.stdout.write(json.dumps(catalog_schema(), indent=2) + "\n")
    return 0
