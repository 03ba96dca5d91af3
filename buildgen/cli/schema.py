"""`buildgen schema`: the catalog's JSON Schema, generated from its models."""

from __future__ import annotations

import argparse
import json
import sys

from buildgen.model.catalog import catalog_schema

DESCRIPTION = "Print the JSON Schema of catalog.yaml (for editors: see README)."


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    sys.stdout.write(json.dumps(catalog_schema(), indent=2) + "\n")
    return 0
