"""What the tests share: the real components started for them (components, registries,
mirrors), catalogs and trees to build and compare (catalogs, trees, images, oci), and the
layers they push (hostile, layergen, synth, gencatalog), and buildx's own reading of our bake
files (bakeprint). Imported as `support.<module>` by the tests (pytest puts tests/ on the
path for its conftest) and as `tests.support.<module>` by the benchmarks (run from the repo
root: `python -m bench.<name>`)."""
