"""Support for tests/integration/test_extract_differential.py: tar layers in any format, a rootfs walker
that takes paths of any length, a model of the extraction policy, and the hypothesis strategy.

- `tar_layer(entries, fmt)` writes `hostile.Entry`s as a PAX, GNU or ustar layer.
- `snapshot(rootfs)` describes a rootfs (the root itself included, as "/"): type, mode, owner,
  content hash or link target, device numbers, user.* xattrs, mtime of non-directories, and
  the hardlink groups. It walks from directory fds, so paths longer than PATH_MAX are fine.
- `Model` applies entries in memory with the semantics of docs/crane-mode.md, "The extraction policy" (Docker/containerd's
  archive.Apply, plus OCI whiteouts that spare what their own layer adds). The strategy uses it
  to pick names that exist, to give hardlinks their target's metadata (as honest writers do:
  umoci never applies a hardlink header's metadata, Docker always does), and to know in
  advance whether (and why) the policy refuses a stack.
- `stacks(...)` is the strategy: 1-4 layers of such entries, with the model's verdict.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from .hostile import MTIME, TAR_TYPES, Entry, Layer, digest, gz

# -- writing layers --------------------------------------------------------------------------

FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}


def tar_bytes(entries: list[Entry], fmt: str) -> bytes:
    """A tar of `entries` in format `fmt` ("pax", "gnu", "ustar"; the last two carry no PAX
    records). ValueError when an entry does not fit the format (ustar: long names, big ids)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=FORMATS[fmt], encoding="utf-8") as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.typeflag if e.typeflag is not None else TAR_TYPES[e.kind]
            info.mode = e.mode if e.mode is not None else 0o644
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.linkname = e.link
            info.devmajor, info.devminor = e.devmajor, e.devminor
            if fmt == "pax":
                info.pax_headers = dict(e.pax)
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return out.getvalue()


def tar_layer(entries: list[Entry], fmt: str) -> Layer:
    tar = tar_bytes(entries, fmt)
    return Layer(gz(tar), "application/vnd.oci.image.layer.v1.tar+gzip", digest(tar))


# -- reading a rootfs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One path of a rootfs as `snapshot` sees it."""

    kind: str  # dir, file, symlink, fifo, char, block, socket
    mode: int  # permission bits with setuid/setgid/sticky
    uid: int
    gid: int
    content: str = ""  # sha256 of a file's bytes, a symlink's target
    rdev: tuple[int, int] = (0, 0)  # of a device node
    xattrs: tuple[tuple[str, bytes], ...] = ()  # user.* only, sorted
    mtime_ns: int | None = None  # of non-directories (directory mtimes are not compared)


@dataclass(frozen=True)
class Snapshot:
    nodes: dict[str, Node]
    hardlinks: frozenset[frozenset[str]]
    umoci_differs: frozenset[str] = frozenset()
    """Paths (of the model's snapshot) where umoci is known to differ from Docker."""


_KINDS = (
    (stat.S_ISDIR, "dir"),
    (stat.S_ISREG, "file"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISCHR, "char"),
    (stat.S_ISBLK, "block"),
)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "socket")


def _user_xattrs(fd: int) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(fd)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(fd, n)) for n in names if n.startswith("user.")))


def snapshot(rootfs: Path) -> Snapshot:
    """Every path of `rootfs` ("/" for the root itself), walked from directory fds."""
    nodes: dict[str, Node] = {}
    inodes: dict[tuple[int, int], set[str]] = {}

    def visit(fd: int, path: str) -> None:
        for name in sorted(os.listdir(fd)):
            child = f"{path}/{name}" if path != "/" else f"/{name}"
            st = os.lstat(name, dir_fd=fd)
            kind = _kind(st.st_mode)
            if kind == "dir":
                sub = os.open(name, _DIR, dir_fd=fd)
                try:
                    nodes[child] = _node(st, kind, xattrs=_user_xattrs(sub))
                    visit(sub, child)
                finally:
                    os.close(sub)
                continue
            content, xattrs = "", ()
            if kind == "file":
                handle = os.open(name, _FILE, dir_fd=fd)
                try:
                    hasher = hashlib.sha256()
                    while chunk := os.read(handle, 1 << 20):
                        hasher.update(chunk)
                    content, xattrs = "sha256:" + hasher.hexdigest(), _user_xattrs(handle)
                finally:
                    os.close(handle)
            elif kind == "symlink":
                content = os.readlink(name, dir_fd=fd)
            nodes[child] = _node(st, kind, content, xattrs, mtime=True)
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), set()).add(child)

    root = os.open(rootfs, _DIR)
    try:
        nodes["/"] = _node(os.fstat(root), "dir", xattrs=_user_xattrs(root))
        visit(root, "/")
    finally:
        os.close(root)
    groups = frozenset(frozenset(p) for p in inodes.values() if len(p) > 1)
    return Snapshot(nodes, groups)


def _node(
    st: os.stat_result,
    kind: str,
    content: str = "",
    xattrs: tuple[tuple[str, bytes], ...] = (),
    *,
    mtime: bool = False,
) -> Node:
    rdev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in ("char", "block") else (0, 0)
    return Node(
        kind,
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        content,
        rdev,
        xattrs,
        st.st_mtime_ns if mtime else None,
    )


# -- the model -------------------------------------------------------------------------------

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_LINKS = 255
IMPLICIT = (0o755, 0, 0)  # a parent directory no entry lists: 0755 root:root (Docker, umoci)
PATH_MAX = 4096  # a symlink target has fewer bytes (symlink(2): ENAMETOOLONG)

Real = tuple[str, ...]
"""A path as it is on disk, symlinks resolved: its components from the root."""


class Refused(Exception):
    """The policy refuses the entry, for one of `reasons` (keys of REFUSALS: when an entry is
    wrong twice over, either may be named)."""

    def __init__(self, *reasons: str, detail: str = "") -> None:
        super().__init__(f"{'/'.join(reasons)}: {detail}")
        self.reasons = frozenset(reasons)


REFUSALS = {
    # parent (or whiteout directory) that is a file, FIFO, symlink to one, ...
    "not-a-directory": r"is not a directory",
    "symlink-loop": r"too many levels of symbolic links",
    "hardlink-missing": r"hardlink target .* does not exist|a hardlink to itself",
    "hardlink-to-directory": r"hardlink target .* is a directory",
    "hardlink-to-root": r"hardlink to the root",
}
"""Why the policy refuses an entry: the regular expression buildgen's message must match."""


@dataclass(eq=False)
class Inode:
    """A file system object of the model; the same Inode in two places is a hardlink."""

    kind: str  # file, dir, symlink, fifo, char, block
    mode: int
    uid: int
    gid: int
    mtime_ns: int | None = None  # None: whenever it was made (implicit directories)
    mtime_pax: str | None = None  # the PAX mtime record it was written with, if any
    content: str = ""  # sha256 of a file's data; a symlink's target
    rdev: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    children: dict[str, Inode] = field(default_factory=dict)  # of a directory
    umoci_differs: bool = False  # an implicit directory umoci makes otherwise than Docker


def clean(name: str) -> Real:
    """Go's filepath.Clean("/" + name), as components (containerd and umoci clean names so)."""
    parts: list[str] = []
    for part in name.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return tuple(parts)


def entry_mtime_ns(e: Entry) -> int:
    record = e.pax.get("mtime")
    if record is None:
        return e.mtime * 10**9
    whole, _, frac = record.partition(".")
    return int(whole) * 10**9 + int((frac + "000000000")[:9])


class Model:
    """A rootfs in memory, changed entry by entry as the policy says (see docs/crane-mode.md, "The extraction policy").

    Symlinks on the way to a name are resolved as securejoin (umoci) and continuity's RootPath
    (containerd) resolve them: component by component, a symlink's target spliced in (from the
    root when absolute), `..` never above the root, and a component that is missing or not a
    directory taken as it is (so `missing/..` and `file/..` are lexical); only then is the
    resolved directory made (create) or refused when a non-directory is on it.
    """

    def __init__(self) -> None:
        self.root = Inode("dir", 0o755, 0, 0)
        self.upper: set[Real] = set()  # what the current layer added, with its ancestors
        self.followed = False  # whether a lookup followed a symlink (for the strategy)

    def new_layer(self) -> None:
        self.upper = set()

    # -- lookups -------------------------------------------------------------------------

    def get(self, real: Real) -> Inode | None:
        """What is at `real` (its last component not followed), None if nothing."""
        node = self.root
        for name in real:
            if node.kind != "dir" or name not in node.children:
                return None
            node = node.children[name]
        return node

    def resolve(self, parts: Real) -> Real:
        """The real path of the directory `parts` names (see the class docstring)."""
        pending = list(reversed(parts))
        real: list[str] = []
        links = 0
        while pending:
            name = pending.pop()
            if name == "..":
                if real:
                    real.pop()
                continue
            if name in ("", "."):
                continue
            node = self.get((*real, name))
            if node is not None and node.kind == "symlink":
                self.followed = True
                links += 1
                if links > MAX_LINKS:
                    raise Refused("symlink-loop", detail="/".join(parts))
                if node.content.startswith("/"):
                    real.clear()
                pending.extend(reversed(node.content.split("/")))
                continue
            real.append(name)
        return tuple(real)

    def directory(self, parts: Real, *, create: bool) -> tuple[Real, Inode | None]:
        """The real path of directory `parts` and its Inode (None: missing and not `create`);
        Refused when a non-directory is on the way."""
        real = self.resolve(parts)
        node = self.root
        for index, name in enumerate(real):
            child = node.children.get(name)
            if child is None:
                if not create:
                    return real, None
                child = Inode("dir", *IMPLICIT)
                if node.mode & stat.S_ISGID:
                    # containerd's mkparent makes it with mkdir then chmods it to 0755: in a
                    # setgid directory it keeps the group the kernel gives it, the parent's.
                    # umoci differs from Docker here: Go's MkdirAll does not chmod, so the
                    # directory keeps the setgid bit too (and passes both on to the ones it
                    # makes inside). Docker decides: the test takes the model's word for them.
                    child.gid = node.gid
                    child.umoci_differs = True
                elif node.umoci_differs:
                    child.umoci_differs = True
                node.children[name] = child
            elif child.kind != "dir":
                raise Refused("not-a-directory", detail="/".join(real[: index + 1]))
            node = child
        return real, node

    def paths(self) -> Iterator[tuple[Real, Inode]]:
        """Every real path and what is there (the root excluded), parents first."""

        def visit(prefix: Real, node: Inode) -> Iterator[tuple[Real, Inode]]:
            for name, child in sorted(node.children.items()):
                yield (*prefix, name), child
                if child.kind == "dir":
                    yield from visit((*prefix, name), child)

        return visit((), self.root)

    # -- changes ---------------------------------------------------------------------------

    def apply(self, e: Entry) -> None:
        """Apply one entry; Refused when the policy refuses it (the model is then undefined)."""
        parts = clean(e.name)
        if parts and parts[-1].startswith(WHITEOUT):
            self._whiteout(parts)
            return
        if not parts:
            return  # names the root: skipped (containerd: "file ignored: resolved to root")
        # The parent is made first, then what is at the name removed, and only then is a
        # hardlink's target looked up: so containerd and umoci go about it (a target reached
        # through what the entry replaces is no longer there).
        real_parent, parent = self.directory(parts[:-1], create=True)
        assert parent is not None
        name = parts[-1]
        real = (*real_parent, name)
        existing = parent.children.get(name)
        if e.kind == "dir" and existing is not None and existing.kind == "dir":
            existing.mode, existing.uid, existing.gid = (e.mode or 0) & 0o7777, e.uid, e.gid
            existing.umoci_differs = False
            existing.xattrs.update(_xattrs(e))
        else:
            parent.children.pop(name, None)
            if e.kind == "hardlink":
                # Docker applies the header's owner and mode to the inode, umoci does not:
                # the strategy writes the target's own.
                parent.children[name] = self.hardlink_target(e.link, parts)[1]
            else:
                parent.children[name] = self._inode(e)
        for index in range(len(real)):
            self.upper.add(real[: index + 1])

    def _inode(self, e: Entry) -> Inode:
        mode = e.mode if e.mode is not None else 0o644
        node = Inode(e.kind, mode & 0o7777, e.uid, e.gid, xattrs=_xattrs(e))
        if e.kind != "dir":
            node.mtime_ns, node.mtime_pax = entry_mtime_ns(e), e.pax.get("mtime")
        if e.kind == "file":
            node.content = "sha256:" + hashlib.sha256(e.data).hexdigest()
        elif e.kind == "symlink":
            node.mode, node.content = 0o777, e.link
        elif e.kind in ("char", "block"):
            node.rdev = (e.devmajor, e.devminor)
        return node

    def hardlink_target(self, link: str, parts: Real | None = None) -> tuple[Real, Inode]:
        """The real path of hardlink target `link` and what is there (for an entry `parts`)."""
        target = clean(link)
        if not target:
            raise Refused("hardlink-to-root", detail=link)
        if target == parts:
            raise Refused("hardlink-missing", detail=f"{link} (itself)")
        try:
            real_parent, parent = self.directory(target[:-1], create=False)
        except Refused as exc:  # a file on the way: no such target
            if "symlink-loop" in exc.reasons:
                raise
            raise Refused("hardlink-missing", detail=link) from None
        node = None if parent is None else parent.children.get(target[-1])
        if node is None:
            raise Refused("hardlink-missing", detail=link)
        if node.kind == "dir":
            raise Refused("hardlink-to-directory", detail=link)
        return (*real_parent, target[-1]), node

    def _whiteout(self, parts: Real) -> None:
        base = parts[-1]
        real_dir, directory = self.directory(parts[:-1], create=True)
        assert directory is not None
        if base == OPAQUE:
            self._purge_children(real_dir, directory)
            return
        # `.wh..wh.x` (but the opaque marker) is the whiteout of `.wh.x`, a name a directory
        # may have: containerd and umoci remove it, as the OCI spec reads.
        name = base[len(WHITEOUT) :]
        assert name not in ("", ".", ".."), "the strategy makes no such whiteouts"
        self._purge(real_dir, directory, name)

    def _purge(self, real_dir: Real, directory: Inode, name: str) -> None:
        """Remove what the lower layers put at real_dir/name, sparing what this layer added."""
        node = directory.children.get(name)
        real = (*real_dir, name)
        if node is None:
            return
        if real not in self.upper:
            del directory.children[name]
        elif node.kind == "dir":
            self._purge_children(real, node)

    def _purge_children(self, real: Real, directory: Inode) -> None:
        for name in sorted(directory.children):
            self._purge(real, directory, name)

    # -- the result ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """What `snapshot` should find on disk (implicit directories' mtimes are not known)."""
        nodes = {"/": _model_node(self.root)}
        inodes: dict[int, set[str]] = {}
        differs = set()
        for real, node in self.paths():
            path = "/" + "/".join(real)
            nodes[path] = _model_node(node)
            if node.kind != "dir":
                inodes.setdefault(id(node), set()).add(path)
            elif node.umoci_differs:
                differs.add(path)
        groups = frozenset(frozenset(p) for p in inodes.values() if len(p) > 1)
        return Snapshot(nodes, groups, frozenset(differs))


def _xattrs(e: Entry) -> dict[str, bytes]:
    prefix = "SCHILY.xattr."
    return {k[len(prefix) :]: v.encode() for k, v in e.pax.items() if k.startswith(prefix)}


def _model_node(node: Inode) -> Node:
    return Node(
        node.kind,
        node.mode,
        node.uid,
        node.gid,
        node.content,
        node.rdev,
        tuple(sorted(node.xattrs.items())) if node.kind in ("file", "dir") else (),
        node.mtime_ns if node.kind != "dir" else None,
    )


# -- the strategy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What the strategy may generate."""

    redirect: bool = True
    """Names that go through symlinks (an earlier layer's or this one's), hardlink targets
    through symlinks or absolute, names with `..`, absolute or naming the root."""
    xattrs: bool = True
    """user.* xattrs (the file system of the rootfs must take them)."""
    devices: bool = False
    """Character and block devices (needs CAP_MKNOD)."""


@dataclass(frozen=True)
class LayerSpec:
    fmt: str  # "pax", "gnu" or "ustar" (written as pax when an entry does not fit ustar)
    entries: tuple[Entry, ...]

    def layer(self, *, drop_root_entries: bool = False) -> Layer:
        entries = [e for e in self.entries if not (drop_root_entries and names_root(e))]
        try:
            return tar_layer(entries, self.fmt)
        except ValueError:
            assert self.fmt == "ustar"
            return tar_layer(entries, "pax")


@dataclass(frozen=True)
class Stack:
    """Layers, and what the policy makes of them: `refusal` (layer index, entry index, the
    acceptable reasons) or, when they all apply, the model's `expected` rootfs."""

    layers: tuple[LayerSpec, ...]
    refusal: tuple[int, int, frozenset[str]] | None
    expected: Snapshot | None

    @property
    def root_entries(self) -> bool:
        return any(names_root(e) for spec in self.layers for e in spec.entries)

    def __repr__(self) -> str:
        """The layers as code (a reproducer), and the verdict."""
        lines = ["Stack("]
        for spec in self.layers:
            lines.append(f"    # {spec.fmt}")
            lines.append("    [")
            lines.extend(f"        {describe(e)}," for e in spec.entries)
            lines.append("    ],")
        lines.append(f"    refusal={self.refusal!r},")
        lines.append(")")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis prints this
        printer.text(repr(self))


def text(value: str) -> str:
    """A string expression, runs of a character written `'d' * 254`: short, still exact."""
    pieces = re.findall(r"((.)\2{15,}|(?:(?!(.)\3{15}).)+)", value, flags=re.DOTALL)
    parts = [
        f"{run[0]!r} * {len(run)}" if len(run) >= 16 and len(set(run)) == 1 else repr(run)
        for run, _, _ in pieces
    ]
    return " + ".join(parts) or "''"


def describe(e: Entry) -> str:
    """`e` as an Entry(...) expression (file data longer than 32 bytes shortened)."""
    args = [text(e.name), repr(e.kind)]
    if e.kind == "file":
        data = repr(e.data) if len(e.data) <= 32 else f"{e.data[:16]!r} * ({len(e.data)} bytes)"
        args.append(data)
    if e.mode is not None:
        args.append(f"mode={e.mode:#o}")
    args += [f"uid={e.uid}", f"gid={e.gid}"]
    if e.mtime != MTIME:
        args.append(f"mtime={e.mtime}")
    if e.link:
        args.append(f"link={text(e.link)}")
    if e.pax:
        args.append(f"pax={e.pax!r}")
    if e.kind in ("char", "block"):
        args.append(f"devmajor={e.devmajor}, devminor={e.devminor}")
    return f"Entry({', '.join(args)})"


def names_root(e: Entry) -> bool:
    return not clean(e.name)


DEEP = "/".join("d" * 254 + c for c in "abcdefghijklmnop")
"""16 components of 255 bytes: a name under it is longer than PATH_MAX (4096)."""

_FILE_MODES = (0o644, 0o755, 0o600, 0o640, 0o000, 0o444, 0o4755, 0o2755, 0o6750, 0o4711, 0o7777)
_DIR_MODES = (0o755, 0o700, 0o750, 0o1777, 0o2775, 0o3775, 0o500, 0o000, 0o7755)
_IDS = (0, 0, 1000, 65534, 4_000_000)  # 4000000: octal needs 8 digits (pax, GNU base-256)
_USTAR_IDS = (0, 0, 1000, 65534)
_ENTRY_KINDS = (
    ("file",) * 4
    + ("dir",) * 3
    + ("symlink",) * 3
    + ("hardlink",) * 3
    + ("whiteout",) * 2
    + ("opaque", "fifo")
)


def stacks(options: Options = Options()) -> st.SearchStrategy[Stack]:
    return _stacks(options)


@st.composite
def _stacks(draw: st.DrawFn, options: Options) -> Stack:
    gen = _Generator(draw, options)
    return gen.stack()


class _Generator:
    def __init__(self, draw: st.DrawFn, options: Options) -> None:
        self.draw = draw
        self.options = options
        self.model = Model()
        long = draw(st.integers(101, 255))
        # A small pool of names, so that entries meet: long ones for >100 and >255 byte
        # paths (a component has at most 255 bytes), one not ASCII.
        # Not UTF-8: "\udcff" is the byte 0xff (surrogateescape, as os.fsdecode has it).
        self.components = ("a", "b", "c", "é", "\udcff", "L" * (long - 1) + "x")
        # Rarely, names under DEEP, longer than PATH_MAX: decided once (an early choice, so
        # that shrinking can drop it), it makes the fresh names of a quarter of the entries.
        self.deep = draw(st.integers(0, 24)) == 24

    # -- the stack -------------------------------------------------------------------------

    def stack(self) -> Stack:
        draw = self.draw
        layers: list[LayerSpec] = []
        for index in range(draw(st.integers(1, 4))):
            self.model.new_layer()
            self.fmt = draw(st.sampled_from(("pax", "pax", "pax", "gnu", "ustar")))
            entries: list[Entry] = []
            for _ in range(draw(st.integers(0, 8))):
                entry = self.entry()
                if entry is None:
                    continue
                before = copy.deepcopy(self.model)
                self.model.followed = False
                try:
                    self.model.apply(entry)
                    if self.model.followed and not self.options.redirect:
                        self.model = before
                        continue
                except Refused as exc:
                    # A refusal ends the stack; most are dropped, so most stacks apply.
                    if draw(st.integers(0, 3)) == 0:
                        entries.append(entry)
                        layers.append(LayerSpec(self.fmt, tuple(entries)))
                        return Stack(tuple(layers), (index, len(entries) - 1, exc.reasons), None)
                    self.model = before
                    continue
                entries.append(entry)
            layers.append(LayerSpec(self.fmt, tuple(entries)))
        return Stack(tuple(layers), None, self.model.snapshot())

    def entry(self) -> Entry | None:
        kinds = _ENTRY_KINDS + (("char", "block") if self.options.devices else ())
        kinds += ("root",) if self.options.redirect else ()
        kind = self.draw(st.sampled_from(kinds))
        return getattr(self, f"_{kind}")()

    # -- entries ---------------------------------------------------------------------------

    def _file(self) -> Entry:
        draw = self.draw
        size = draw(st.sampled_from((0, 1, 16, 16, 16, 70_000)))
        data = draw(st.binary(min_size=min(size, 16), max_size=min(size, 16)))
        data = (data * (size // max(len(data), 1) + 1))[:size] if data else b""
        name = self.name()
        return Entry(name, "file", data, draw(st.sampled_from(_FILE_MODES)), *self.ids(),
                     mtime=self.mtime(), pax=self.pax(xattrs=True))  # fmt: skip

    def _dir(self) -> Entry | None:
        draw = self.draw
        name = self.name()
        if draw(st.booleans()):
            name += "/"
        pax = self.pax(xattrs=True)
        existing = self.peek(name)
        if existing is not None and existing.kind == "dir" and existing.xattrs:
            # umoci clears a directory's xattrs before it sets the header's, Docker only sets
            # them: umoci differs from Docker here (Docker decides); a directory listed again
            # keeps its xattrs in the header, so both end the same.
            if self.fmt != "pax":
                return None
            for key, value in existing.xattrs.items():
                pax.setdefault(f"SCHILY.xattr.{key}", value.decode())
        return Entry(name, "dir", b"", draw(st.sampled_from(_DIR_MODES)), *self.ids(),
                     mtime=self.mtime(), pax=pax)  # fmt: skip

    def _symlink(self) -> Entry:
        name = self.name()
        return Entry(name, "symlink", b"", 0o777, *self.ids(), mtime=self.mtime(),
                     link=self.symlink_target(name), pax=self.pax(xattrs=False))  # fmt: skip

    def _fifo(self) -> Entry:
        mode = self.draw(st.sampled_from((0o600, 0o620, 0o644, 0o666)))
        return Entry(self.name(), "fifo", b"", mode, *self.ids(), mtime=self.mtime(),
                     pax=self.pax(xattrs=False))  # fmt: skip

    def _char(self) -> Entry:
        return self._device("char", (1, 3), (1, 5), (5, 0), (136, 7))

    def _block(self) -> Entry:
        return self._device("block", (8, 0), (7, 1), (259, 3))

    def _device(self, kind: str, *numbers: tuple[int, int]) -> Entry:
        major, minor = self.draw(st.sampled_from(numbers))
        mode = self.draw(st.sampled_from((0o600, 0o660, 0o666)))
        return Entry(self.name(), kind, b"", mode, *self.ids(), mtime=self.mtime(),
                     devmajor=major, devminor=minor)  # fmt: skip

    def _root(self) -> Entry:
        """An entry naming the root: skipped (Docker). umoci differs from Docker here: it
        applies a directory's metadata to the root and refuses any other type, so umoci gets
        the layers without these entries (Docker decides)."""
        draw = self.draw
        name = draw(st.sampled_from(("./", "/", ".", "a/..", "../", "./a/../..", "//")))
        kind = draw(st.sampled_from(("dir", "dir", "file", "symlink", "fifo")))
        return Entry(name, kind, b"root?" if kind == "file" else b"", 0o700, 1, 1,
                     link="/elsewhere" if kind == "symlink" else "")  # fmt: skip

    def _hardlink(self) -> Entry | None:
        draw = self.draw
        candidates = [(r, n) for r, n in self.model.paths() if n.kind != "dir"]
        how = draw(st.integers(0, 12))
        if how == 0 or not candidates:  # no such target, a directory, or the root: refused
            link = draw(st.sampled_from(("nothing", "a", "./", "a/b/nothing")))
        else:
            real, _ = draw(st.sampled_from(candidates))
            link = self.spell(real, through=how >= 9)
        try:
            _, target = self.model.hardlink_target(link)
        except Refused:
            target = None
        name = self.name()
        if how >= 11 and "/" in link.strip("/"):
            # named as the first component of its target's name (a symlink, when spelled
            # through one): the target is looked up once that name is replaced
            name = link.strip("/").split("/")[0]
        if target is None:
            return Entry(name, "hardlink", link=link)
        if target.mtime_pax is not None and self.fmt != "pax":
            # This layer cannot write the target's exact mtime, which Docker would apply to
            # the inode (umoci would not): link something else.
            return None
        pax = {"mtime": target.mtime_pax} if target.mtime_pax is not None else {}
        mtime = (target.mtime_ns or 0) // 10**9
        return Entry(name, "hardlink", b"", target.mode, target.uid, target.gid,
                     mtime=mtime, link=link, pax=pax)  # fmt: skip

    def _whiteout(self) -> Entry | None:
        draw = self.draw
        existing = list(self.model.paths())
        how = draw(st.integers(0, 12))
        if how == 0:
            # In a file: Docker (mkparent) refuses; umoci ignores it.
            files = [r for r, n in existing if n.kind == "file"]
            if not files:
                return None
            return Entry(self.spell(draw(st.sampled_from(files))) + "/.wh.x")
        if how == 1 or not existing:  # of a name that is not there, in a directory that is
            dirs = [r for r, n in existing if n.kind == "dir"]
            directory = draw(st.sampled_from(dirs)) if dirs else ()
            return Entry(self.join(self.spell(directory), ".wh.nothing"))
        real, _ = draw(st.sampled_from(existing))
        return Entry(self.join(self.spell(real[:-1], through=how >= 9), ".wh." + real[-1]))

    def _opaque(self) -> Entry | None:
        draw = self.draw
        dirs = [r for r, n in self.model.paths() if n.kind == "dir"]
        directory = draw(st.sampled_from(dirs)) if dirs and draw(st.integers(0, 5)) else ()
        return Entry(self.join(self.spell(directory, through=draw(st.booleans())), OPAQUE))

    # -- names -----------------------------------------------------------------------------

    @staticmethod
    def join(directory: str, name: str) -> str:
        return f"{directory.rstrip('/')}/{name}" if directory.strip("/.") else name

    def component(self) -> str:
        return self.draw(st.sampled_from(self.components))

    def fresh(self) -> str:
        depth = self.draw(st.integers(1, 3))
        name = "/".join(self.component() for _ in range(depth))
        if depth > 1 and self.draw(st.integers(0, 15)) == 0:
            name = ".wh.w/" + name  # the whiteout prefix on a directory: a plain name
        if self.deep and self.draw(st.integers(0, 3)) == 0:
            name = f"{DEEP}/{name}"
        return name

    def name(self) -> str:
        """A name for a new entry: new, of something there, in a directory there, or
        through a symlink there; sometimes spelled oddly (absolute, with `..`, `.`, `//`)."""
        draw = self.draw
        existing = list(self.model.paths())
        how = draw(st.sampled_from(("new", "new", "there", "in", "in", "through", "through")))
        name = self.fresh()
        if how == "there" and existing:
            name = self.spell(draw(st.sampled_from(existing))[0])
        elif how == "in":
            dirs = [r for r, n in existing if n.kind == "dir"]
            if dirs:
                name = self.join(self.spell(draw(st.sampled_from(dirs))), self.component())
        elif how == "through" and self.options.redirect:
            links = [r for r, n in existing if n.kind == "symlink"]
            if links:
                name = self.join("/".join(draw(st.sampled_from(links))), self.fresh())
        return self.oddly(name)

    def oddly(self, name: str) -> str:
        """`name` spelled as a writer might, meaning the same once cleaned."""
        if not self.options.redirect:
            return self.draw(st.sampled_from((name, "./" + name)))
        how = self.draw(st.integers(0, 9))
        head, _, tail = name.rpartition("/")
        return (
            name,
            name,
            name,
            name + "/",
            "./" + name,
            "/" + name,
            "../" + name,
            f"{head}//{tail}" if head else name,
            f"x/../{name}",
            f"{head}/./{tail}" if head else f"./{name}",
        )[how]

    def spell(self, real: Real, *, through: bool = False) -> str:
        """A name that resolves to the real path `real` (which exists): itself, sometimes
        absolute or through a symlink that resolves to one of its directories."""
        if through and self.options.redirect:
            aliases = []
            for path, node in self.model.paths():
                if node.kind != "symlink":
                    continue
                try:
                    resolved = self.model.resolve(path)
                except Refused:
                    continue
                if len(resolved) <= len(real) and real[: len(resolved)] == resolved:
                    aliases.append("/".join((*path, *real[len(resolved) :])))
            if aliases:
                return self.draw(st.sampled_from(aliases))
        name = "/".join(real)
        if self.options.redirect and self.draw(st.integers(0, 3)) == 0:
            return "/" + name
        return name

    def symlink_target(self, name: str) -> str:
        target = self._symlink_target(name)
        return target if len(os.fsencode(target)) < PATH_MAX else self.fresh()

    def _symlink_target(self, name: str) -> str:
        draw = self.draw
        depth = len(clean(name)) - 1
        existing = list(self.model.paths())
        how = draw(st.integers(0, 13))
        if how <= 7 and existing:
            real = "/".join(draw(st.sampled_from(existing))[0])
            if how == 7:
                # `..` after something that is not a directory: lexical for Docker and umoci
                other = [r for r, n in existing if n.kind != "dir"]
                if other:
                    return "/" + "/".join(draw(st.sampled_from(other))) + "/../" + real
            return (
                "/" + real,
                "../" * depth + real,
                "../" * (depth + 3) + real,  # climbs above the root: clamped there
                real + "/",
                "/" + real + "/.",
                "./" + real if depth == 0 else "../" * depth + "./" + real,
                f"{self.component()}/../{real}",  # what is there, or nothing, then `..`
                real,
            )[how]
        return (
            self.fresh(),  # dangling, maybe made as a directory by an entry through it
            "/" + self.fresh(),
            ".",
            "..",
            "/",
            name.rstrip("/"),  # itself: a loop
        )[how % 6]

    def peek(self, name: str) -> Inode | None:
        parts = clean(name)
        try:
            _, parent = self.model.directory(parts[:-1], create=False)
        except Refused:
            return None
        return None if parent is None or not parts else parent.children.get(parts[-1])

    # -- metadata --------------------------------------------------------------------------

    def ids(self) -> tuple[int, int]:
        ids = _IDS if self.fmt != "ustar" else _USTAR_IDS
        return self.draw(st.sampled_from(ids)), self.draw(st.sampled_from(ids))

    def mtime(self) -> int:
        return MTIME - self.draw(st.sampled_from((0, 0, 1, 86_400, 1_000_000_000)))

    def pax(self, *, xattrs: bool) -> dict[str, str]:
        """PAX records (none in GNU and ustar layers). xattrs only for files and directories:
        umoci differs from Docker here: a user.* xattr on a symlink or FIFO (EPERM from the
        kernel) fails umoci's unpack, where containerd and buildgen skip it (Docker decides;
        the shape is not generated)."""
        if self.fmt != "pax":
            return {}
        draw = self.draw
        records: dict[str, str] = {}
        if draw(st.integers(0, 3)) == 0:
            records["mtime"] = draw(st.sampled_from(("1700000000.5", "1600000000.123456789")))
        if draw(st.integers(0, 5)) == 0:
            records[draw(st.sampled_from(("comment", "BUILDGEN.unknown")))] = "ignored"
        if xattrs and self.options.xattrs and draw(st.integers(0, 3)) == 0:
            key = draw(st.sampled_from(("user.a", "user.b", "user.long." + "k" * 100)))
            records[f"SCHILY.xattr.{key}"] = draw(st.sampled_from(("1", "é", "v" * 300)))
        return records
