"""buildgen.crane.rootpath: names cleaned and directories resolved inside a root, never out of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildgen.crane.rootpath import MAX_LINKS, PathRefused, clean, copy_files_out, resolve


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("a/b", ("a", "b")),
        ("./a//b/", ("a", "b")),
        ("/etc/passwd", ("etc", "passwd")),
        ("../../x", ("x",)),
        ("a/../../b/./c/..", ("b",)),
        ("..", ()),
        ("./", ()),
        ("", ()),
        ("..gitme/.wh.x", ("..gitme", ".wh.x")),
    ],
)
def test_clean(name: str, parts: tuple[str, ...]) -> None:
    assert clean(name) == parts


def found(root: Path, name: str, create: bool = False) -> str | None:
    made: list[tuple[str, ...]] = []
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = resolve(fd, clean(name), create=made.append if create else None, max_depth=64)
    finally:
        os.close(fd)
    if result is None:
        return None
    os.close(result[1])
    return "/" + "/".join(result[0])


def test_symlinks_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "abs").symlink_to("/usr/lib")
    (root / "up").symlink_to("../../../../../usr")
    (root / "chain").symlink_to("abs/../lib")
    (root / "nowhere-then-back").symlink_to("nowhere/../usr")
    (root / "host").symlink_to(str(tmp_path))
    assert found(root, "lib") == "/usr/lib"
    assert found(root, "abs") == "/usr/lib"
    assert found(root, "up/lib") == "/usr/lib"
    assert found(root, "chain") == "/usr/lib"  # abs -> /usr/lib, then .. -> /usr, then lib
    assert found(root, "nowhere-then-back") == "/usr"  # a missing name and `..` cancel
    (root / "file").write_text("x")
    (root / "file-then-back").symlink_to("file/../usr")
    assert found(root, "file-then-back") == "/usr"  # so do a file and `..` (containerd)
    assert found(root, "host") is None  # the host's path, looked up in the root: not there
    assert found(root, "host/x", create=True) == f"{tmp_path}/x"  # made inside the root
    assert (root / str(tmp_path).lstrip("/") / "x").is_dir()
    assert not (tmp_path / "x").exists()


def test_loops_non_directories_and_depth_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    (root / "file").write_text("x")
    (root / "to-file").symlink_to("file")
    with pytest.raises(PathRefused, match=f"more than {MAX_LINKS}"):
        found(root, "a/x")
    with pytest.raises(PathRefused, match="file is not a directory"):
        found(root, "to-file/x", create=True)
    assert found(root, "to-file/x") is None
    (root / "deep").symlink_to("/".join(["d"] * 40))
    with pytest.raises(PathRefused, match="deeper than 64"):
        found(root, "deep/" + "/".join(["e"] * 30), create=True)


def test_files_are_copied_out_of_the_root_and_nothing_else(tmp_path: Path) -> None:
    """The crane runner's chroot fallback copies /output/task out of the rootfs this way."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret")
    root = tmp_path / "root"
    (root / "output/task/sub").mkdir(parents=True)
    (root / "output/task/result.json").write_text("{}")
    (root / "output/task/leak").symlink_to(host / "secret")
    os.mkfifo(root / "output/task/fifo")
    copied = copy_files_out(root, "/output/task", tmp_path / "out")
    assert copied == ["result.json"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.json"]
    # /output itself a link to a host directory: resolved inside the root, where it is not
    (root / "output/task/result.json").unlink()
    other = tmp_path / "root2"
    other.mkdir()
    (other / "output").symlink_to(host)
    (host / "task").mkdir()
    (host / "task/result.json").write_text("host file")
    assert copy_files_out(other, "/output/task", tmp_path / "out2") == []
    assert not (tmp_path / "out2").exists()
