"""buildgen.crane.treecopy: a copy of an unpacked rootfs is the same tree, and never follows a link.

The source trees are made by the extraction (tests/support/hostile.py layers through apply_image), so
they hold what real images hold: special mode bits, owners, root-only files, read-only
directories, hardlinks (also of a symlink), symlinks, FIFOs, xattrs and exact mtimes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from support.hostile import Entry, d, f, hard, layer, sym
from support.trees import apply, hardlinks, snapshot, tree, user_xattrs_supported

from buildgen.crane import treecopy
from buildgen.crane.treecopy import CopyError, copy_tree


def rich_tree(tmp_path: Path) -> Path:
    xattrs = {"SCHILY.xattr.user.origin": "buildgen", "SCHILY.xattr.user.bin": "\x01\x02é"}
    use_xattrs = user_xattrs_supported(tmp_path) is None
    apply(
        tmp_path,
        layer(
            d("bin"),
            f("bin/busybox", "bb" * 5000, 0o4755, uid=0, gid=0),
            hard("bin/ls", "bin/busybox", 0o4755),
            d("tasks", 0o700),
            f("tasks/answer.txt", "42", 0o600),
            d("home"),
            d("home/agent", 0o750, uid=1000, gid=1000),
            f(
                "home/agent/notes",
                "n",
                0o640,
                uid=1000,
                gid=1000,
                pax=xattrs if use_xattrs else None,
            ),
            d("tmp", 0o1777),
            d("srv", 0o2775, gid=50),
            d("ro", 0o555),
            f("ro/inside", "r", 0o444),
            sym("etc-link", "/etc"),
            sym("dangling", "../nowhere"),
            hard("etc-link2", "etc-link", 0o777),
            d("run"),
            Entry("run/pipe", "fifo", mode=0o620, uid=1000, gid=5),
            f("empty", b"", 0o644),
            f("big", os.urandom(3 << 20), 0o755, uid=7, gid=8),
        ),
        layer(d("usr"), hard("usr/busybox", "bin/busybox", 0o4755)),
    )
    return tmp_path / "rootfs"


@pytest.mark.parametrize("workers", [1, 4])
def test_copy_is_the_same_tree(tmp_path: Path, workers: int) -> None:
    source = rich_tree(tmp_path)
    stats = copy_tree(source, tmp_path / "copy", workers=workers)
    copy = tmp_path / "copy"
    assert snapshot(copy) == snapshot(source)  # types, modes, owners, contents, mtimes, nlinks
    assert tree(copy) == tree(source)
    assert (
        hardlinks(copy)
        == hardlinks(source)
        == {
            frozenset({"/bin/busybox", "/bin/ls", "/usr/busybox"}),
            frozenset({"/etc-link", "/etc-link2"}),
        }
    )
    for path in ("", "tmp", "srv", "ro", "home/agent"):  # the directories themselves too
        assert os.lstat(copy / path).st_mode == os.lstat(source / path).st_mode
        assert os.lstat(copy / path).st_mtime_ns == os.lstat(source / path).st_mtime_ns
    assert tree(copy)["/bin/busybox"].mode == 0o4755  # chmod after chown kept setuid
    assert tree(copy)["/tasks/answer.txt"].mode == 0o600
    if user_xattrs_supported(tmp_path) is None:
        notes = copy / "home/agent/notes"
        assert os.getxattr(notes, "user.origin") == b"buildgen"
        assert os.getxattr(notes, "user.bin") == "\x01\x02é".encode()
    assert stats.files == 6 and stats.hardlinks == 3 and stats.fifos == 1


def test_symlinks_are_copied_never_followed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "d").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (source / "d" / "to-outside").symlink_to(outside)
    (source / "abs").symlink_to("/etc")
    copy_tree(source, tmp_path / "copy")
    assert os.readlink(tmp_path / "copy/d/to-outside") == str(outside)
    assert os.readlink(tmp_path / "copy/abs") == "/etc"
    assert sorted(p.name for p in (tmp_path / "copy").rglob("*")) == ["abs", "d", "to-outside"]


def test_refuses_an_existing_destination_and_sockets(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (tmp_path / "exists").mkdir()
    with pytest.raises(CopyError, match="cannot make"):
        copy_tree(source, tmp_path / "exists")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(source / "sock"))
        with pytest.raises(CopyError, match="socket"):
            copy_tree(source, tmp_path / "copy")


@pytest.mark.skipif(os.geteuid() != 0, reason="device nodes are made as root only")
def test_device_nodes_are_copied_never_opened(tmp_path: Path) -> None:
    apply(
        tmp_path,
        layer(
            d("dev"),
            Entry("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
            Entry("dev/loop9", "block", mode=0o640, uid=0, gid=6, devmajor=7, devminor=9),
            hard("dev/null2", "dev/null", 0o666),
        ),
    )
    copy_tree(tmp_path / "rootfs", tmp_path / "copy")
    assert tree(tmp_path / "copy") == tree(tmp_path / "rootfs")
    assert tree(tmp_path / "copy")["/dev/loop9"].content == "7:9"
    assert hardlinks(tmp_path / "copy") == {frozenset({"/dev/null", "/dev/null2"})}


def test_paths_longer_than_path_max(tmp_path: Path) -> None:
    # 4.5 KB deep: no single system call could take the whole path.
    deep = "/".join(["d" * 40 + str(i) for i in range(110)])
    assert len(deep) > 4500
    apply(
        tmp_path,
        layer(
            f(f"{deep}/file", "x", 0o600),
            hard(f"{deep}/link", f"{deep}/file", 0o600),
            d(f"{deep}/ro", 0o500),
        ),
    )
    copy_tree(tmp_path / "rootfs", tmp_path / "copy")
    assert tree(tmp_path / "copy") == tree(tmp_path / "rootfs")
    assert hardlinks(tmp_path / "copy") == {frozenset({f"/{deep}/file", f"/{deep}/link"})}


def test_nothing_is_readable_by_others_while_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The new tree is 0700 until its last directory is done: a root-only file inside a
    # 0755 directory is never reachable by others, even mid-copy.
    source = tmp_path / "source"
    source.mkdir()
    (source / "answers").write_text("42")
    os.chmod(source / "answers", 0o600)
    copy = tmp_path / "copy"
    seen: list[int] = []
    original = treecopy._copy_bytes

    def spy(source_fd: int, target_fd: int, size: int) -> None:
        seen.append(os.lstat(copy).st_mode & 0o777)
        seen.append(os.fstat(target_fd).st_mode & 0o777)
        original(source_fd, target_fd, size)

    monkeypatch.setattr(treecopy, "_copy_bytes", spy)
    copy_tree(source, copy, workers=1)
    assert seen == [0o700, 0o600]
    assert os.lstat(copy).st_mode & 0o777 == os.lstat(source).st_mode & 0o777
