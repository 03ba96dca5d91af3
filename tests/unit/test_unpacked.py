"""buildgen.crane.unpacked: unpacked images kept by chain ID for warm materialize runs."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostile import Layer, d, f, layer, sym, write_blob
from support.trees import hardlinks, tree

from buildgen.crane.extract import ExtractionError, apply_image
from buildgen.crane.unpacked import UnpackedCache, chain_id, chain_id_of


def blobs(tmp_path: Path, *layers: Layer) -> list[tuple[Path, str, str | None]]:
    return [(write_blob(tmp_path / "blobs", x.blob), x.media_type, x.diff_id) for x in layers]


def ids(layers: list[tuple[Path, str, str | None]]) -> list[str | None]:
    return [diff_id for _, _, diff_id in layers]


def test_chain_id_is_the_oci_one() -> None:
    a, b, c = ("sha256:" + hashlib.sha256(x).hexdigest() for x in (b"a", b"b", b"c"))
    assert chain_id([a]) == a
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_id([a, b]) == ab
    assert chain_id([a, b, c]) == "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()


def test_build_then_get_the_same_tree(tmp_path: Path) -> None:
    layers = blobs(
        tmp_path,
        layer(d("tasks", 0o700), f("tasks/a", "42", 0o600), sym("l", "/etc")),
        layer(f("bin", "x", 0o4755, uid=3)),
    )
    cache = UnpackedCache(tmp_path / "unpacked", limit=10**9)
    assert cache.get(ids(layers)) is None
    built = cache.build(ids(layers), layers)
    assert cache.get(ids(layers)) == built
    apply_image(tmp_path / "direct", layers)
    assert tree(built) == tree(tmp_path / "direct")
    assert hardlinks(built) == hardlinks(tmp_path / "direct")
    key = chain_id_of(ids(layers))
    assert key is not None and built.name == key.split(":")[1]
    seal = json.loads(built.with_name(built.name + ".json").read_text())
    assert seal["chainId"] == key and seal["files"] == 2
    assert os.lstat(tmp_path / "unpacked").st_mode & 0o777 == 0o700  # root-only files inside
    assert sorted(p.name for p in (tmp_path / "unpacked").iterdir()) == [
        built.name,
        seal_name(built),
    ]


def seal_name(tree_path: Path) -> str:
    return tree_path.name + ".json"


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    layers = blobs(tmp_path, layer(f("ok", "1")), layer(f("ok/under-a-file", "x")))
    cache = UnpackedCache(tmp_path / "unpacked", limit=10**9)
    with pytest.raises(ExtractionError, match="ok is not a directory"):
        cache.build(ids(layers), layers)
    assert list((tmp_path / "unpacked").iterdir()) == []


def test_an_unsealed_tree_is_not_used_and_is_replaced(tmp_path: Path) -> None:
    layers = blobs(tmp_path, layer(f("a", "1")))
    cache = UnpackedCache(tmp_path / "unpacked", limit=10**9)
    key = chain_id_of(ids(layers))
    assert key is not None
    half = tmp_path / "unpacked" / key.split(":")[1]  # a builder died before its seal
    half.mkdir(parents=True)
    (half / "partial").write_text("?")
    assert cache.get(ids(layers)) is None
    built = cache.build(ids(layers), layers)
    assert sorted(p.name for p in built.iterdir()) == ["a"]


def test_layers_without_diff_ids_are_not_kept(tmp_path: Path) -> None:
    [(blob, media_type, _)] = blobs(tmp_path, layer(f("a", "1")))
    cache = UnpackedCache(tmp_path / "unpacked", limit=10**9)
    assert chain_id_of([None]) is None
    assert cache.get([None]) is None
    with pytest.raises(ValueError):
        cache.build([None], [(blob, media_type, None)])


def test_least_recently_used_trees_go_first(tmp_path: Path) -> None:
    images = [blobs(tmp_path, layer(f(f"file{i}", str(i) * 1000))) for i in range(3)]
    cache = UnpackedCache(tmp_path / "unpacked", limit=2500)  # room for two of 1,000 bytes
    first, second = cache.build(ids(images[0]), images[0]), cache.build(ids(images[1]), images[1])
    os.utime(first.with_name(seal_name(first)), (1, 1))  # long unused
    os.utime(second.with_name(seal_name(second)), (2, 2))
    assert cache.get(ids(images[1])) == second  # a use makes it the most recent
    third = cache.build(ids(images[2]), images[2])
    assert cache.get(ids(images[0])) is None and not first.exists()
    assert cache.get(ids(images[1])) == second and cache.get(ids(images[2])) == third


def test_a_tree_in_use_is_not_evicted(tmp_path: Path) -> None:
    images = [blobs(tmp_path, layer(f(f"file{i}", str(i) * 1000))) for i in range(3)]
    cache = UnpackedCache(tmp_path / "unpacked", limit=1500)  # room for one of 1,000 bytes
    first = cache.build(ids(images[0]), images[0])
    chain = chain_id_of(ids(images[0]))
    assert chain is not None
    with cache.hold(chain):  # as materialize holds it while it copies (flock: any process)
        second = cache.build(ids(images[1]), images[1])
        assert cache.get(ids(images[0])) == first
        assert (first / "file0").read_text() == "0" * 1000
    third = cache.build(ids(images[2]), images[2])  # no longer held: both older ones go
    assert cache.get(ids(images[0])) is None and not first.exists() and not second.exists()
    assert cache.get(ids(images[2])) == third


def test_layers_are_taken_one_at_a_time(tmp_path: Path) -> None:
    # A generator of layers (materialize hands each over once its blob is downloaded) is
    # consumed lazily: the first layer is applied before the second is asked for.
    layers = blobs(tmp_path, layer(f("a", "1")), layer(f("b", "2")))
    cache = UnpackedCache(tmp_path / "unpacked", limit=10**9)
    seen: list[list[str]] = []

    def lazily() -> Iterator[tuple[Path, str, str | None]]:
        for item in layers:
            work = [p for p in (tmp_path / "unpacked").glob("tmp-*/tree/*")]
            seen.append(sorted(p.name for p in work))
            yield item

    built = cache.build(ids(layers), lazily())
    assert seen == [[], ["a"]]
    assert sorted(p.name for p in built.iterdir()) == ["a", "b"]


def test_a_layer_count_that_does_not_match_the_diff_ids_is_refused(tmp_path: Path) -> None:
    layers = blobs(tmp_path, layer(f("a", "1")), layer(f("b", "2")))
    cache = UnpackedCache(tmp_path / "unpacked", limit=10**9)
    with pytest.raises(ValueError, match="2 layers for 3 diff_ids"):
        cache.build([*ids(layers), layers[0][2]], layers)
    assert list((tmp_path / "unpacked").iterdir()) == []
