"""`buildgen validate`: check the catalog and every file it names."""

from __future__ import annotations

import argparse
import logging

from buildgen.model.catalog import load_catalog

log = logging.getLogger(__name__)


DESCRIPTION = (
    "Check the catalog and every file it names. Exit 0 when valid; exit 2 when not, with "
    "every error as FILE:LINE:COL: message on stderr."
)


def run(args: argparse.Namespace, passthrough: list[str]) -> int:
    catalog = load_catalog(args.catalog)  # CatalogError lists every problem
    counts = {
        "core": len(catalog.model.core),
        "benchmarks": len(catalog.model.benchmarks),
        "agents": len(catalog.model.agents),
        "gateways": len(catalog.model.gateways),
        "combination rules": len(catalog.model.combinations),
    }
    summary = ", ".join(f"{n} {what}" for what, n in counts.items())
    log.info("%s: valid (%s)", args.catalog, summary)
    return 0
