"""buildgen: catalog → docker-bake → published multi-arch images → digest lockfile."""

__version__ = "0.1.0"
