"""Defaults the CLI shows in --help, kept apart so that parsing flags imports nothing heavy."""

DEFAULT_CATALOG = "catalog.yaml"
DEFAULT_SHARD_SIZE = 500  # bake targets per file: buildx resolves small files much faster
