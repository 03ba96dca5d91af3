"""The checked-in JSON Schema is the one the models generate, and the repo's catalog points at it."""

from __future__ import annotations

import json

from support.catalogs import REPO

from buildgen.model.catalog import catalog_schema

SCHEMA = REPO / "schema" / "catalog.schema.json"


def test_checked_in_schema_is_current() -> None:
    checked_in = json.loads(SCHEMA.read_text())
    assert checked_in == catalog_schema(), (
        "schema/catalog.schema.json is stale: run `buildgen schema > schema/catalog.schema.json`"
    )


def test_schema_forbids_unknown_keys() -> None:
    schema = catalog_schema()
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        assert definition.get("additionalProperties") is False, name


def test_catalog_references_schema_for_editors() -> None:
    first_line = (REPO / "catalog.yaml").read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=schema/catalog.schema.json"


def test_repo_catalog_satisfies_the_schema() -> None:
    import jsonschema
    import yaml

    schema = json.loads(SCHEMA.read_text())
    catalog = yaml.safe_load((REPO / "catalog.yaml").read_text())
    jsonschema.validate(catalog, schema)
    catalog["agents"]["echo-agent"]["verison"] = "1.0.0"
    try:
        jsonschema.validate(catalog, schema)
    except jsonschema.ValidationError as exc:
        assert "verison" in exc.message
    else:
        raise AssertionError("the schema accepted an unknown key")
