"""Bench: `buildgen materialize` vs `skopeo copy` + `umoci raw unpack` of the same image.

A realistic benchmark image (by default about 1 GB uncompressed in 60,000 regular files: a base
OS layer, a Python venv, a repository checkout with its .git, and a small cleanup layer with
whiteouts; gzip layers; contents a mix of code-like text, bytecode/ELF-like half-random data and
random bytes) and a small agent image providing /opt/agent are generated once, cached under
/var/tmp/buildgen-bench (keyed by the parameters), pushed to a local `docker-registry` with
correct configs and diff_ids, and pinned in a lockfile. Then, in the same run, each case is
timed --repeat times (default 2; the order alternates between repeats), always into new
directories:

- buildgen cold: `buildgen materialize` with an empty cache (download and verify the blobs,
  extract the benchmark's layers into the cache's unpacked images, copy that tree into the
  rootfs, fuse the agent's /opt/agent);
- buildgen warm: the same command again with the same cache (nothing to download, nothing to
  extract: the rootfs is a copy of the unpacked image), new rootfs;
- the same two with `--overlay` (own cache): the rootfs is an overlay mount of the unpacked
  image instead of a copy (when this process may mount; unmounted, untimed, after each);
- the peer: `skopeo copy docker://... oci:DIR:tag` then `umoci raw unpack` of the benchmark
  image, new directories.

The page cache is not dropped (that needs a privileged write to /proc/sys/vm/drop_caches and
would disturb everything else on the machine): the registry's blobs are in memory for every case
alike. `sync` runs (untimed) before each case, so one case's writeback does not land on the
next. Nothing is deleted between cases: on ext4, creating files shortly after tens of thousands
were deleted is several times slower (the allocator skips recently freed inodes; `perf` shows
`recently_deleted` under `ext4_create`), which would penalize whichever case came next. Goals checked: cold no slower than the peer; warm at least 2x faster than cold. The
buildgen rootfs (without /opt/agent) is checked once to equal umoci's (`tests/support/trees.py`: `tree`
and hardlink groups). When cold is slower than the peer (or with --profile always), a cProfile
run of the CLI and single-threaded micro-measurements of the extraction's stages say where the
time goes. The registry and every rootfs, cache and OCI directory are removed at the end; the
generated image is kept.

Run: .venv/bin/python -m bench.bench_materialize [--files 60000] [--megabytes 1000]
     [--baseline REV]    (also time buildgen as of REV in the same rounds, and print ratios)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from buildgen.crane.blobcache import BlobCache, BlobRef
from buildgen.crane.extract import apply_image
from buildgen.crane.tarstream import TarReader
from buildgen.registry import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, RegistryClient
from tests.support.components import Registry, start_registry
from tests.support.trees import hardlinks, tree

REPO = Path(__file__).resolve().parent.parent
GENERATOR = 2  # bump whenever the generated image changes, so old caches are not reused
BENCH_DIR = Path(os.environ.get("BUILDGEN_BENCH_DIR", "/var/tmp/buildgen-bench"))
PLATFORM = "linux/amd64"
BENCHMARK, AGENT, TAG = "bigrepo", "bench-agent", "1.0.0"
AGENT_PROVIDES = [{"path": "/opt/agent", "mode": "0755", "uid": 0, "gid": 0}]
SEED = 20_240_601
MTIME = 1_700_000_000
CORPUS_BYTES = 8 << 20
GZIP_LEVEL = 6  # what Docker and BuildKit use (Go's gzip.DefaultCompression)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the image: entries ----------------------------------------------------------------------


class Spec(NamedTuple):
    """One tar entry to write; `cls` says how a regular file's bytes are made."""

    kind: str  # "file", "dir", "symlink", "hardlink"
    name: str
    size: int = 0
    cls: str = "empty"  # "text", "pyc", "so", "random", "empty"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME
    link: str = ""


@dataclass(frozen=True)
class ClassShape:
    """Size distribution of a content class: lognormal, scaled to the layer's byte budget."""

    median: float
    sigma: float
    cap: int
    extensions: tuple[str, ...]


CLASSES = {
    "text": ClassShape(
        3_000,
        1.3,
        4 << 20,
        (".py",) * 8
        + (
            ".md",
            ".txt",
            ".json",
            ".cfg",
            ".toml",
            ".rst",
            ".yaml",
            ".html",
            ".js",
            ".css",
            ".h",
            ".c",
            ".pyi",
        ),
    ),
    "pyc": ClassShape(4_000, 1.1, 2 << 20, (".cpython-311.pyc",)),
    "so": ClassShape(60_000, 2.0, 80 << 20, (".so",) * 4 + (".so.1", ".a", "")),
    "random": ClassShape(2_000, 2.2, 80 << 20, (".gz", ".png", ".whl", ".zip", ".jpg", ".npz")),
    "empty": ClassShape(0, 0, 0, ("",)),
}
EMPTY_NAMES = ("__init__.py", "py.typed", "INSTALLER", "REQUESTED", ".keep")


@dataclass(frozen=True)
class LayerShape:
    """One layer: its share of files and bytes, where its files go, its owner, its class mix
    ({class: (share of the layer's files, share of its bytes)})."""

    name: str
    file_share: float
    byte_share: float
    roots: tuple[str, ...]
    uid: int
    mix: dict[str, tuple[float, float]]


LAYERS = (
    LayerShape(
        "base",
        0.18,
        0.17,
        (
            "usr/lib/x86_64-linux-gnu",
            "usr/lib/python3.11",
            "usr/share/doc",
            "usr/share/locale",
            "usr/include",
            "var/lib/dpkg/info",
        ),
        0,
        {
            "text": (0.30, 0.15),
            "pyc": (0.25, 0.12),
            "so": (0.15, 0.55),
            "random": (0.25, 0.18),
            "empty": (0.05, 0.0),
        },
    ),
    LayerShape(
        "venv",
        0.50,
        0.55,
        ("opt/venv/lib/python3.11/site-packages",),
        0,
        {
            "text": (0.45, 0.25),
            "pyc": (0.35, 0.17),
            "so": (0.05, 0.45),
            "random": (0.08, 0.13),
            "empty": (0.07, 0.0),
        },
    ),
    LayerShape(
        "repo",
        0.32,
        0.27,
        ("work/repo/src", "work/repo/tests", "work/repo/docs"),
        1000,
        {"text": (0.70, 0.55), "random": (0.27, 0.45), "empty": (0.03, 0.0)},
    ),
)

_SYLLABLES = (
    "ka ri to mo na se lu pe di ga vo ber tan mix log cal pro set get val key map arg buf req "
    "res cfg ctx db io net obj str num idx err opt env app api sys run add del new old max min "
    "sum len cnt tmp src dst url tok ast node tree col row"
)
SYLLABLES = _SYLLABLES.split()


class Namer:
    """Identifiers from a fixed syllable set (the same vocabulary everywhere)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        words = {
            "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(4000)
        }
        self.words = sorted(words)

    def word(self) -> str:
        """Zipf-ish: a few words are very common, as in code."""
        return self.words[min(int(self.rng.expovariate(1 / 250)), len(self.words) - 1)]

    def ident(self) -> str:
        words = self.rng.choices((1, 2, 3), (6, 3, 1))[0]
        return "_".join(self.word() for _ in range(words))

    def dirname(self) -> str:
        return self.word() if self.rng.random() < 0.8 else self.ident()


def make_corpus(size: int) -> bytes:
    """Python-looking text (gzip takes it to about a quarter, like real source)."""
    rng = random.Random(SEED)
    namer = Namer(rng)
    w = namer.word
    templates: list[Callable[[], str]] = [
        lambda: f"def {w()}_{w()}(self, {w()}, {w()}={rng.randrange(1000)}):",
        lambda: f"return {w()}.{w()}({w()}, {w()}={rng.randrange(1 << 16)})",
        lambda: f"{w()} = {w()}.{w()}({w()}, {rng.randrange(1 << 20)})",
        lambda: f"if {w()} is not None and {w()}.{w()} > {rng.randrange(100)}:",
        lambda: "# " + " ".join(w() for _ in range(rng.randint(3, 12))),
        lambda: '"""' + " ".join(w() for _ in range(rng.randint(4, 14))).capitalize() + '."""',
        lambda: f"from {w()}.{w()} import {w()}, {w()}",
        lambda: f"class {w().title()}{w().title()}({w().title()}):",
        lambda: f'raise {w().title()}Error(f"{w()} {w()} {{{w()}!r}}")',
        lambda: f"for {w()} in {w()}.{w()}():",
        lambda: f"{w()}[{rng.randrange(64)}] = '{rng.getrandbits(64):016x}'",
        lambda: f"self.{w()} = {w()}",
        lambda: "",
    ]
    lines, total, depth = [], 0, 0
    while total < size:
        depth = max(0, min(4, depth + rng.choice((-1, 0, 0, 1))))
        line = "    " * depth + rng.choice(templates)() + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


class Grower:
    """Directories that grow like a source tree: files cluster in recent directories."""

    def __init__(self, rng: random.Random, namer: Namer, roots: tuple[str, ...], per_dir: float):
        self.rng, self.namer, self.per_dir = rng, namer, per_dir
        self.dirs = list(roots)
        self.used: set[str] = set(roots)
        self.depth = dict.fromkeys(roots, 0)  # below its root: packages nest a few levels

    def unique(self, parent: str, make: Callable[[], str]) -> str:
        while True:
            path = f"{parent}/{make()}"
            if path not in self.used:
                self.used.add(path)
                return path

    def pick(self) -> str:
        if self.rng.random() < 1 / self.per_dir:
            parent = self.rng.choice(self.dirs)
            if self.depth[parent] < 5:
                new = self.unique(parent, self.namer.dirname)
                self.depth[new] = self.depth[parent] + 1
                self.dirs.append(new)
                return new
        if self.rng.random() < 0.7:
            return self.rng.choice(self.dirs[-8:])
        return self.rng.choice(self.dirs)


def sizes(rng: random.Random, n: int, total: int, shape: ClassShape) -> list[int]:
    """`n` lognormal sizes summing to about `total` (capped at shape.cap)."""
    if n == 0 or total <= 0:
        return [0] * n
    raw = [rng.lognormvariate(math.log(shape.median), shape.sigma) for _ in range(n)]
    for _ in range(8):
        scale = total / sum(raw)
        raw = [min(float(shape.cap), max(1.0, x * scale)) for x in raw]
    return [int(x) for x in raw]


def ancestors(path: str) -> Iterator[str]:
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def plan_benchmark(files: int, megabytes: int) -> list[list[Spec]]:
    """The entries of each layer of the benchmark image (no bytes yet), in tar order."""
    rng = random.Random(SEED + 1)
    namer = Namer(rng)
    total_bytes = megabytes * 1_000_000
    dir_meta: dict[str, tuple[int, int, int]] = {}  # path -> (mode, uid, gid), across layers
    layers: list[dict[str, Spec]] = []
    for shape in LAYERS:
        entries: dict[str, Spec] = {}
        n_files = round(files * shape.file_share)
        grower = Grower(rng, namer, shape.roots, per_dir=12.0)
        base_time = MTIME - rng.randrange(10_000_000)

        def add(spec: Spec, entries: dict[str, Spec] = entries) -> None:
            entries[spec.name] = spec

        for cls, (file_share, byte_share) in shape.mix.items():
            count = round(n_files * file_share)
            budget = int(total_bytes * shape.byte_share * byte_share)
            if shape.name == "repo" and cls == "random":
                # The pack holds most of a clone's history; loose objects are small.
                pack = int(budget * 0.35)
                budget -= pack
                pack_hex = f"{rng.getrandbits(160):040x}"
                add(
                    Spec(
                        "file",
                        f"work/repo/.git/objects/pack/pack-{pack_hex}.pack",
                        pack,
                        "random",
                        0o444,
                        1000,
                        1000,
                        base_time,
                    )
                )
                add(
                    Spec(
                        "file",
                        f"work/repo/.git/objects/pack/pack-{pack_hex}.idx",
                        pack // 40,
                        "random",
                        0o444,
                        1000,
                        1000,
                        base_time,
                    )
                )
                count -= 2
            for size in sizes(rng, count, budget, CLASSES[cls]):
                name = place(rng, namer, grower, shape.name, cls)
                ext = name.rsplit("/", 1)[-1]
                executable = cls == "so" and (ext.endswith(".so") or "." not in ext)
                mode = 0o755 if executable or name.endswith(".sh") else 0o644
                mtime = base_time + rng.randrange(1_000_000)
                add(Spec("file", name, size, cls, mode, shape.uid, shape.uid, mtime))
        specials(rng, shape.name, entries, dir_meta)
        regular = [s for s in entries.values() if s.kind == "file"]
        # A few hardlinks to files of the same layer, as package managers leave them.
        for target in rng.sample(regular, min(10, len(regular))):
            add(
                Spec(
                    "hardlink",
                    target.name + "~",
                    0,
                    "empty",
                    target.mode,
                    target.uid,
                    target.gid,
                    target.mtime,
                    target.name,
                )
            )
        if shape.name == "base":
            libs = [s for s in regular if s.cls == "so" and s.name.endswith(".so")]
            for target in rng.sample(libs, min(300, len(libs))):
                head, _, base = target.name.rpartition("/")
                add(
                    Spec("symlink", f"{head}/{base}.6", 0, "empty", 0o777, 0, 0, target.mtime, base)
                )
        layers.append(entries)
    layers.append(cleanup_layer(rng, layers))
    return [with_parents(entries, dir_meta) for entries in layers]


def place(rng: random.Random, namer: Namer, grower: Grower, layer: str, cls: str) -> str:
    if layer == "repo" and cls == "random" and rng.random() < 0.85:
        hexname = f"{rng.getrandbits(160):040x}"  # a loose git object
        grower.used.add(f"work/repo/.git/objects/{hexname[:2]}/{hexname[2:]}")
        return f"work/repo/.git/objects/{hexname[:2]}/{hexname[2:]}"
    directory = grower.pick()
    if cls == "pyc":
        return grower.unique(f"{directory}/__pycache__", lambda: namer.ident() + ".cpython-311.pyc")
    if cls == "empty":
        candidates = iter(EMPTY_NAMES)
        return grower.unique(directory, lambda: next(candidates, None) or namer.ident() + ".keep")
    extensions = CLASSES[cls].extensions
    if layer == "repo" and cls == "text":
        extensions = (*extensions, ".sh")
    return grower.unique(directory, lambda: namer.ident() + rng.choice(extensions))


def specials(
    rng: random.Random, layer: str, entries: dict[str, Spec], dir_meta: dict[str, Any]
) -> None:
    """The entries every real image of this kind has: merged-/usr links, setuid binaries, odd
    modes and owners, absolute and relative symlinks, a venv's links."""

    def put(*specs: Spec) -> None:
        for spec in specs:
            entries[spec.name] = spec
            if spec.kind == "dir":
                dir_meta[spec.name] = (spec.mode, spec.uid, spec.gid)

    if layer == "base":
        put(
            Spec("dir", "tmp", mode=0o1777),
            Spec("dir", "root", mode=0o700),
            Spec("dir", "opt", mode=0o755),
            Spec("dir", "etc/ssl/private", mode=0o700),
            Spec("dir", "home/user", mode=0o750, uid=1000, gid=1000),
            Spec("dir", "var/lib/apt/lists", mode=0o755),
        )
        for link in ("bin", "lib", "lib64", "sbin"):
            put(Spec("symlink", link, mode=0o777, link=f"usr/{link}"))
        put(
            Spec("file", "usr/bin/python3.11", 6_000_000, "so", 0o755),
            Spec("symlink", "usr/bin/python3", mode=0o777, link="python3.11"),
            Spec("symlink", "usr/bin/python", mode=0o777, link="python3"),
            Spec("file", "usr/bin/perl", 4_000_000, "so", 0o755),
            Spec("hardlink", "usr/bin/perl5.36.0", mode=0o755, link="usr/bin/perl"),
            Spec("file", "usr/bin/passwd", 60_000, "so", 0o4755),
            Spec("file", "usr/bin/wall", 30_000, "so", 0o2755, 0, 5),
            Spec("file", "etc/shadow", 700, "text", 0o640, 0, 42),
            Spec("file", "etc/passwd", 900, "text", 0o644),
            Spec("symlink", "etc/localtime", mode=0o777, link="/usr/share/zoneinfo/Etc/UTC"),
            Spec("file", "etc/ssl/private/ssl-cert-snakeoil.key", 1_700, "random", 0o640, 0, 101),
            Spec("file", "root/.bashrc", 3_100, "text", 0o644),
        )
        for i in range(40):
            put(
                Spec(
                    "file",
                    f"var/lib/apt/lists/deb.example_dists_{i}_Packages",
                    250_000 + i,
                    "text",
                    0o644,
                )
            )
    elif layer == "venv":
        put(
            Spec("symlink", "opt/venv/bin/python", mode=0o777, link="/usr/bin/python3"),
            Spec("symlink", "opt/venv/bin/python3", mode=0o777, link="python"),
            Spec("symlink", "opt/venv/lib64", mode=0o777, link="lib"),
            Spec("file", "opt/venv/pyvenv.cfg", 120, "text"),
        )
        for i in range(30):
            put(Spec("file", f"opt/venv/bin/tool{i}", 250 + i, "text", 0o755))
    elif layer == "repo":
        put(
            Spec("dir", "work", mode=0o755),
            Spec("dir", "work/repo", mode=0o755, uid=1000, gid=1000),
            Spec("file", "work/repo/.git/HEAD", 23, "text", 0o644, 1000, 1000),
            Spec("file", "work/repo/.git/config", 300, "text", 0o644, 1000, 1000),
            Spec("file", "work/repo/.git/index", 2_000_000, "random", 0o644, 1000, 1000),
            Spec("file", "work/repo/README.md", 9_000, "text", 0o644, 1000, 1000),
            Spec(
                "symlink",
                "work/repo/docs/README.md",
                mode=0o777,
                uid=1000,
                gid=1000,
                link="../README.md",
            ),
        )


def cleanup_layer(rng: random.Random, layers: list[dict[str, Spec]]) -> dict[str, Spec]:
    """`RUN rm -rf /usr/share/doc/x ... /var/lib/apt/lists/* && sed -i ...` as a layer: file and
    directory whiteouts, an opaque directory with a new file in it, and files overwritten."""
    base, venv = layers[0], layers[1]
    entries: dict[str, Spec] = {}
    docs = sorted(
        {n.split("/")[3] for n in base if n.startswith("usr/share/doc/") and n.count("/") >= 4}
    )
    removed_docs = rng.sample(docs, min(3, len(docs)))
    for name in removed_docs:
        entries[f"usr/share/doc/.wh.{name}"] = Spec("file", f"usr/share/doc/.wh.{name}", mode=0)
    linked = {s.link for layer in layers for s in layer.values() if s.kind == "hardlink"}
    candidates = [
        s.name
        for s in base.values()
        if s.kind == "file"
        and s.name not in linked
        and not s.name.startswith(("var/lib/apt/", "usr/bin/", "etc/"))
        and not any(s.name.startswith(f"usr/share/doc/{d}/") for d in removed_docs)
    ]
    for name in rng.sample(candidates, min(20, len(candidates))):
        head, _, tail = name.rpartition("/")
        entries[f"{head}/.wh.{tail}"] = Spec("file", f"{head}/.wh.{tail}", mode=0)
    entries["var/lib/apt/lists/.wh..wh..opq"] = Spec(
        "file", "var/lib/apt/lists/.wh..wh..opq", mode=0
    )
    entries["var/lib/apt/lists/lock"] = Spec("file", "var/lib/apt/lists/lock", 0, "empty", 0o640)
    overwritten = [s for s in venv.values() if s.kind == "file" and s.name not in linked]
    for spec in rng.sample(overwritten, min(5, len(overwritten))):
        entries[spec.name] = Spec("file", spec.name, 4_000, "text", 0o600, 0, 0, MTIME + 86_400)
    entries["etc/bench-release"] = Spec("file", "etc/bench-release", 200, "text", 0o644)
    return entries


def with_parents(entries: dict[str, Spec], dir_meta: dict[str, Any]) -> list[Spec]:
    """Every parent directory listed too (with the metadata it has in the image), then all in
    tar order: a directory before what is in it, names sorted, as BuildKit writes them."""
    out = dict(entries)
    for spec in entries.values():
        for parent in ancestors(spec.name):
            if parent not in out:
                uid = 1000 if parent.startswith("work/repo") else 0
                mode, uid, gid = dir_meta.get(parent, (0o755, uid, uid))
                dir_meta.setdefault(parent, (mode, uid, gid))
                out[parent] = Spec("dir", parent, 0, "empty", mode, uid, gid, MTIME)
    return sorted(out.values(), key=lambda s: s.name.split("/"))


def plan_agent() -> list[Spec]:
    rng = random.Random(SEED + 2)
    namer = Namer(rng)
    entries = {
        "opt/agent": Spec("dir", "opt/agent", mode=0o755),
        "opt/agent/bin/agent": Spec("file", "opt/agent/bin/agent", 3_000_000, "so", 0o755),
        "opt/agent/etc/agent.json": Spec("file", "opt/agent/etc/agent.json", 800, "text", 0o600),
        "usr/local/bin/agent": Spec(
            "symlink", "usr/local/bin/agent", mode=0o777, link="/opt/agent/bin/agent"
        ),
    }
    grower = Grower(rng, namer, ("opt/agent/lib/agent",), per_dir=10.0)
    for size in sizes(rng, 200, 3_000_000, CLASSES["text"]):
        name = grower.unique(grower.pick(), lambda: namer.ident() + ".py")
        entries[name] = Spec("file", name, size, "text")
    return with_parents(entries, {})


# -- the image: bytes ------------------------------------------------------------------------


class Content:
    """Bytes for each content class, deterministic per seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.corpus = make_corpus(CORPUS_BYTES)

    def make(self, cls: str, size: int) -> bytes:
        if size == 0:
            return b""
        if cls == "text":
            return self.text(size)
        if cls == "random":
            return self.rng.randbytes(size)
        if cls == "pyc":  # marshal data: names and constants between binary fields
            return (b"\xa7\r\r\n" + bytes(12) + self.mixed(size, 128, 0.30, 0.05))[:size]
        if cls == "so":  # code (high entropy), string tables, zero padding
            return (b"\x7fELF\x02\x01\x01" + bytes(9) + self.mixed(size, 4096, 0.45, 0.20))[:size]
        raise ValueError(cls)

    def text(self, size: int) -> bytes:
        if size >= len(self.corpus):
            return (self.corpus * (size // len(self.corpus) + 1))[:size]
        start = self.rng.randrange(len(self.corpus) - size)
        return self.corpus[start : start + size]

    def mixed(self, size: int, piece: int, random_share: float, zero_share: float) -> bytes:
        out = bytearray()
        rng = self.rng
        while len(out) < size:
            roll = rng.random()
            if roll < random_share:
                out += rng.randbytes(piece)
            elif roll < random_share + zero_share:
                out += bytes(piece)
            else:
                out += self.text(piece)
        return bytes(out[:size])


class HashingWriter:
    """A write-only stream that hashes and counts what passes through."""

    def __init__(self, out: Any) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def write_layer(specs: list[Spec], seed: int, directory: Path) -> dict[str, Any]:
    """Write one gzip layer; returns its descriptor, diff_id and counts."""
    content = Content(seed)
    temp = directory / f"layer-{seed}.tmp"
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "whiteouts": 0, "bytes": 0}
    with open(temp, "wb") as raw_file:
        raw = HashingWriter(raw_file)
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as gz:
            plain = HashingWriter(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for spec in specs:
                    info = tarfile.TarInfo(spec.name)
                    info.mode, info.uid, info.gid, info.mtime = (
                        spec.mode,
                        spec.uid,
                        spec.gid,
                        spec.mtime,
                    )
                    data = b""
                    base = spec.name.rsplit("/", 1)[-1]
                    if spec.kind == "dir":
                        info.type = tarfile.DIRTYPE
                        counts["dirs"] += 1
                    elif spec.kind == "symlink":
                        info.type, info.linkname = tarfile.SYMTYPE, spec.link
                        counts["symlinks"] += 1
                    elif spec.kind == "hardlink":
                        info.type, info.linkname = tarfile.LNKTYPE, spec.link
                        counts["hardlinks"] += 1
                    elif base.startswith(".wh."):
                        counts["whiteouts"] += 1
                    else:
                        data = content.make(spec.cls, spec.size)
                        info.size = len(data)
                        counts["files"] += 1
                        counts["bytes"] += len(data)
                    tar.addfile(info, io.BytesIO(data) if data else None)
    path = directory / raw.digest().split(":", 1)[1]
    os.replace(temp, path)
    return {
        "mediaType": OCI_LAYER_GZIP,
        "digest": raw.digest(),
        "size": raw.size,
        "diff_id": plain.digest(),
        "uncompressed": plain.size,
        **counts,
    }


def store(directory: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (directory / digest.split(":", 1)[1]).write_bytes(data)
    return digest


def assemble(directory: Path, layers: list[dict[str, Any]], history: list[str]) -> dict[str, Any]:
    """Config and OCI manifest for `layers` (blobs in `directory`); the image's record."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {
                "Env": ["PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin"],
                "WorkingDir": "/work/repo",
            },
            "rootfs": {"type": "layers", "diff_ids": [x["diff_id"] for x in layers]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": h} for h in history],
        },
        sort_keys=True,
    ).encode()
    config_digest = store(directory, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": x["mediaType"], "digest": x["digest"], "size": x["size"]}
                for x in layers
            ],
        },
        sort_keys=True,
    ).encode()
    return {"manifest": store(directory, manifest), "config": config_digest, "layers": layers}


def generate(files: int, megabytes: int) -> tuple[Path, dict[str, Any]]:
    """The generated images (from the cache when there): their blob directory and record."""
    key = f"gen{GENERATOR}-f{files}-m{megabytes}-s{SEED}"
    target = BENCH_DIR / "images" / key
    if (target / "image.json").is_file():
        log(f"image: cached in {target}")
        return target, json.loads((target / "image.json").read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    try:
        start = time.perf_counter()
        log(f"image: generating {files:,} files, {megabytes:,} MB into {target} (once)...")
        bench_layers = plan_benchmark(files, megabytes)
        jobs = [*bench_layers, plan_agent()]
        with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
            # Biggest first, so the two workers finish together.
            order = sorted(range(len(jobs)), key=lambda i: -sum(s.size for s in jobs[i]))
            futures = {i: pool.submit(write_layer, jobs[i], SEED + 10 + i, work) for i in order}
            written = [futures[i].result() for i in range(len(jobs))]
        history = [
            "base OS + python3.11",
            "python -m venv /opt/venv && pip install ...",
            "COPY --chown=1000:1000 . /work/repo",
            "RUN rm -rf ... && sed -i ...",
        ]
        record = {
            "params": {
                "files": files,
                "megabytes": megabytes,
                "seed": SEED,
                "generator": GENERATOR,
            },
            "benchmark": assemble(work, written[:-1], history),
            "agent": assemble(work, written[-1:], ["COPY agent /opt/agent"]),
        }
        (work / "image.json").write_text(json.dumps(record, indent=2) + "\n")
        try:
            os.rename(work, target)
        except OSError:  # another run made it meanwhile
            shutil.rmtree(work)
        log(f"image: generated in {time.perf_counter() - start:.0f} s")
        return target, json.loads((target / "image.json").read_text())
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


# -- registry and lockfile -------------------------------------------------------------------


def chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


def push(client: RegistryClient, repository: str, blobs: Path, image: dict[str, Any]) -> None:
    for digest in [image["config"], *(x["digest"] for x in image["layers"])]:
        path = blobs / digest.split(":", 1)[1]
        if not client.blob_exists(repository, digest):
            client.upload_blob(repository, digest, lambda p=path: chunks(p), path.stat().st_size)
    manifest = (blobs / image["manifest"].split(":", 1)[1]).read_bytes()
    client.put_manifest(repository, TAG, manifest, OCI_MANIFEST)


def write_lock(path: Path, prefix: str, images: dict[str, Any]) -> None:
    """images.lock.json (docs/lockfile.md) pinning both images by manifest digest."""

    def entry(repository: str, image: dict[str, Any]) -> dict[str, Any]:
        size = sum(x["size"] for x in image["layers"])
        return {
            "reference": f"{repository}:{TAG}",
            "digest": image["manifest"],
            "mediaType": OCI_MANIFEST,
            "inputs": None,
            "platforms": {PLATFORM: {"digest": image["manifest"], "size": size}},
        }

    lock = {
        "lockVersion": 1,
        "catalogDigest": "sha256:" + hashlib.sha256(b"bench_materialize").hexdigest(),
        "registry": prefix,
        "images": {
            f"benchmarks/{BENCHMARK}": entry(
                f"{prefix}/benchmarks/{BENCHMARK}", images["benchmark"]
            ),
            f"agents/{AGENT}": {
                **entry(f"{prefix}/agents/{AGENT}", images["agent"]),
                "provides": AGENT_PROVIDES,
            },
        },
    }
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


# -- the cases -------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    cpu: float  # user + system seconds of the command and its children
    load: float  # 1-minute load average when it started


@dataclass
class Case:
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def best(self) -> float:
        return min(r.wall for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(r.cpu for r in self.runs)


def settle(*paths: Path) -> None:
    """Remove what an earlier case left, and write back dirty pages, before timing."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    os.sync()


def timed(command: list[str], source: Path = REPO) -> Run:
    """Run `command` (from `source`: a checkout whose buildgen `python -m buildgen` runs)."""
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(source)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=source, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{done.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, load)


def materialize_args(lock: Path, rootfs: Path, cache: Path, record: Path) -> list[str]:
    return [
        "materialize",
        "-q",
        "--lock",
        str(lock),
        "--benchmark",
        BENCHMARK,
        "--agent",
        AGENT,
        "--platform",
        PLATFORM,
        "--rootfs",
        str(rootfs),
        "--cache",
        str(cache),
        "--record",
        str(record),
    ]


def buildgen(
    lock: Path, rootfs: Path, cache: Path, record: Path, *extra: str, source: Path = REPO
) -> Run:
    command = [sys.executable, "-m", "buildgen", *materialize_args(lock, rootfs, cache, record)]
    return timed([*command, *extra], source)


def unmount(rootfs: Path) -> None:
    """(untimed) Remove an --overlay rootfs's mount; its files stay in the cache's tree."""
    subprocess.run([sys.executable, "-m", "buildgen", "materialize", "--unmount", "--rootfs",
                    str(rootfs)], cwd=REPO, check=True, capture_output=True)  # fmt: skip


def checkout(revision: str, where: Path) -> Path:
    """A worktree of this repository at `revision` (a commit to compare with), bytecode built."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where),
                    revision], check=True)  # fmt: skip
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(where / "buildgen")], check=True)
    return where


def overlay_works(work: Path) -> str | None:
    """None when this process can mount an overlay; else why not."""
    from buildgen.crane.overlay import OverlayUnavailable, overlay_mount
    from buildgen.crane.overlay import unmount as overlay_unmount

    (work / "probe-lower").mkdir()
    try:
        overlay_mount(work / "probe-lower", work / "probe")
    except OverlayUnavailable as exc:
        return str(exc)
    overlay_unmount(work / "probe")
    return None


def skopeo_copy(reference: str, oci: Path) -> Run:
    return timed(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{reference}",
            f"oci:{oci}:bench",
        ]
    )


def umoci_unpack(oci: Path, rootfs: Path) -> Run:
    return timed(
        ["umoci", "--log", "error", "raw", "unpack", "--image", f"{oci}:bench", str(rootfs)]
    )


def without_agent(entries: dict[str, Any]) -> dict[str, Any]:
    return {
        p: e for p, e in entries.items() if p != "/opt/agent" and not p.startswith("/opt/agent/")
    }


def verify(ours: Path, theirs: Path) -> tuple[bool, str]:
    """buildgen's rootfs, without the fused /opt/agent, equals umoci's (tree + hardlinks)."""
    a, b = without_agent(tree(ours)), tree(theirs)
    problems = []
    for path in sorted(a.keys() | b.keys()):
        if a.get(path) != b.get(path):
            problems.append(f"{path}: buildgen {a.get(path)} / umoci {b.get(path)}")
    links_a = {g for g in hardlinks(ours) if not any(p.startswith("/opt/agent/") for p in g)}
    if links_a != hardlinks(theirs):
        problems.append("hardlink groups differ")
    kinds: dict[str, int] = {}
    for entry in b.values():
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    summary = ", ".join(f"{n:,} {k}s" for k, n in sorted(kinds.items()))
    if problems:
        return False, f"{len(problems)} differences, e.g.:\n  " + "\n  ".join(problems[:10])
    return True, f"{len(b):,} paths identical ({summary}); hardlink groups identical"


# -- where the time goes ---------------------------------------------------------------------


def ratio(seconds: float, peer: float) -> str:
    r = seconds / peer
    return f"{r:.2f}x ({1 / r:.1f}x faster)" if r < 1 else f"{r:.2f}x ({r:.1f}x slower)"


def profile_cli(lock: Path, work: Path) -> tuple[Run, pstats.Stats]:
    prof = work / "materialize.prof"
    settle(work / "prof-rootfs", work / "prof-cache")
    command = [
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        str(prof),
        "-m",
        "buildgen",
        *materialize_args(
            lock, work / "prof-rootfs", work / "prof-cache", work / "prof-record.json"
        ),
    ]
    return timed(command), pstats.Stats(str(prof))


class Row(NamedTuple):
    file: str
    name: str
    calls: int
    own: float
    cumulative: float

    @property
    def label(self) -> str:
        return self.name if self.file == "~" else f"{Path(self.file).name}:{self.name}"


def stat_rows(stats: pstats.Stats) -> list[Row]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return [
        Row(f, name, calls, own, cumulative)
        for (f, _, name), (_, calls, own, cumulative, _) in raw.items()
    ]


def cumulative(rows: list[Row], module: str, name: str) -> float:
    return max(
        (r.cumulative for r in rows if r.file.endswith(module) and r.name == name), default=0.0
    )


class Clock:
    """Wall and CPU seconds (this process, all threads; user + system) of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def stage_times(blobs: list[Path]) -> dict[str, Clock]:
    """Single-threaded timings of what extraction does, stage by stage, on the cached layers
    (through buildgen.crane.layerstream's readers)."""
    from buildgen.crane import layerstream

    out: dict[str, Clock] = {}
    with Clock() as clock:
        for blob in blobs:
            raw_hash, plain_hash = hashlib.sha256(), hashlib.sha256()
            inflate = zlib.decompressobj(31)
            with open(blob, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    raw_hash.update(chunk)
                    plain_hash.update(inflate.decompress(chunk))
    out["gunzip + sha256 of both streams (plain zlib, 1 MiB reads)"] = clock

    def parse() -> Clock:
        with Clock() as clock:
            for blob in blobs:
                with open(blob, "rb", buffering=0) as handle:
                    raw = layerstream.HashingReader(handle, "sha256")
                    plain = layerstream.HashingReader(
                        layerstream.decompressor("gzip", raw), "sha256"
                    )
                    reader = TarReader(lambda plain=plain: plain.read(1 << 20))  # type: ignore[misc]
                    while reader.next() is not None:
                        for _ in reader.data():
                            pass
                    plain.drain()
                    raw.drain()
        return clock

    out[PARSE] = parse()
    return out


PARSE = "gunzip + hashes through buildgen's reader stack + tar parsing (tarstream), no writes"


def profile(
    lock: Path, work: Path, client: RegistryClient, host: str, image: dict[str, Any]
) -> None:
    """Print where cold `buildgen materialize` spends its time."""
    files = sum(x["files"] for x in [*image["benchmark"]["layers"], *image["agent"]["layers"]])
    log("profile: cProfile run of the CLI (cold)...")
    run, stats = profile_cli(lock, work)
    rows = stat_rows(stats)
    print("\n### Where the time goes (cold, cProfile of the CLI; profiler overhead included)\n")
    print(
        f"Profiled cold run: {run.wall:.1f} s wall, {run.cpu:.1f} s CPU (unprofiled cold: see "
        "above). Downloads run in worker threads, which cProfile does not see: the main "
        "thread waiting for them is the download phase.\n"
    )
    print("| phase (cumulative) | s | share |")
    print("|---|---|---|")
    total = max(r.cumulative for r in rows)
    for label, module, name in (
        ("pull (manifests + parallel blob downloads, verified)", "materialize.py", "pull"),
        ("apply_image (all layers: gunzip, hash, tar, write)", "extract.py", "apply_image"),
        ("fuse /opt/agent", "materialize.py", "fuse"),
    ):
        seconds = cumulative(rows, f"buildgen/{module}", name)
        print(f"| {label} | {seconds:.1f} | {seconds / total:.0%} |")
    print(f"| whole CLI | {total:.1f} | 100% |")
    print("\nTop functions by own time:\n")
    print("| function | calls | own s | cumulative s |")
    print("|---|---|---|---|")
    for row in sorted(rows, key=lambda r: -r.own)[:18]:
        print(f"| `{row.label}` | {row.calls:,} | {row.own:.2f} | {row.cumulative:.2f} |")
    syscalls = [
        r
        for r in rows
        if r.name.startswith("<built-in method posix.")
        and not r.name.startswith(("<built-in method posix._", "<built-in method posix.fspath"))
    ]
    calls = sum(r.calls for r in syscalls)
    print(
        f"\nos.* calls (one syscall or more each): {calls:,} = {calls / files:.1f} per "
        f"regular file written (both images), {sum(r.own for r in syscalls):.1f} s own time. "
        "Most frequent: "
        + ", ".join(
            f"`{r.name[len('<built-in method posix.') : -1]}` {r.calls:,}"
            for r in sorted(syscalls, key=lambda r: -r.calls)[:12]
        )
    )

    # Stage by stage, without the profiler.
    log("profile: download alone and extraction stages...")
    bench = image["benchmark"]
    repository = f"{host}/bench/benchmarks/{BENCHMARK}"
    refs = [BlobRef(repository, x["digest"], x["size"]) for x in bench["layers"]]
    settle(work / "dl-cache")
    with Clock() as download:
        paths = BlobCache(work / "dl-cache").fetch_all(client, refs)
    stages = stage_times([paths[x["digest"]] for x in bench["layers"]])
    settle(work / "stage-rootfs")
    with Clock() as extraction:
        apply_image(
            work / "stage-rootfs",
            [(paths[x["digest"]], x["mediaType"], x["diff_id"]) for x in bench["layers"]],
        )
    settle(work / "stage-rootfs", work / "dl-cache")
    compressed = sum(x["size"] for x in bench["layers"])
    print(
        "\nStages in process, no profiler, benchmark image only. CPU seconds are the steadier "
        "number on a loaded machine (wall includes waiting for a core).\n"
    )
    print("| stage | wall s | CPU s |")
    print("|---|---|---|")
    stages = {
        f"download {compressed / 1e6:,.0f} MB, 8 threads, sha256 + fsync "
        "(`BlobCache.fetch_all`)": download,
        **stages,
        "full `apply_image` (the above + file system writes, metadata)": extraction,
    }
    for label, clock in stages.items():
        print(f"| {label} | {clock.wall:.1f} | {clock.cpu:.1f} |")
    if PARSE in stages:
        parse = stages[PARSE]
        print(
            "| = file system work + per-entry Python (apply_image minus parsing) | "
            f"{extraction.wall - parse.wall:.1f} | {extraction.cpu - parse.cpu:.1f} |"
        )


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60_000, help="regular files in the image")
    parser.add_argument("--megabytes", type=int, default=1000, help="uncompressed MB (10^6)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each case")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also time buildgen as of this git revision (cold and warm, both ways), in the "
        "same rounds, and print the ratios",
    )
    parser.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="profile cold buildgen: when slower than the peer (auto)",
    )
    args = parser.parse_args()
    for tool in ("skopeo", "umoci", "docker-registry"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    load_start = os.getloadavg()
    blobs, image = generate(args.files, args.megabytes)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=BENCH_DIR))
    registry: Registry | None = None
    try:
        registry = start_registry(work / "registry")
        prefix = f"{registry.host}/bench"
        bench_ref = f"{prefix}/benchmarks/{BENCHMARK}:{TAG}"
        with RegistryClient() as client:
            log(f"registry {registry.host}: pushing...")
            push(client, f"{prefix}/benchmarks/{BENCHMARK}", blobs, image["benchmark"])
            push(client, f"{prefix}/agents/{AGENT}", blobs, image["agent"])
            lock = work / "images.lock.json"
            write_lock(lock, prefix, image)

            cold, warm = (
                Case("buildgen materialize, cold (empty cache)"),
                Case("buildgen materialize, warm (cached blobs, unpacked image)"),
            )
            cold_ov, warm_ov = (
                Case("buildgen materialize --overlay, cold (empty cache)"),
                Case("buildgen materialize --overlay, warm (cached blobs, unpacked image)"),
            )
            no_overlay = overlay_works(work)
            base = checkout(args.baseline, work / "baseline") if args.baseline else None
            base_cases = [
                Case(f"{args.baseline}: materialize{flag}, {phase}")
                for flag in ("", " --overlay")
                if base is not None and not (flag and no_overlay)
                for phase in ("cold", "warm")
            ]
            peer, skopeo, umoci = (
                Case("skopeo copy + umoci raw unpack"),
                Case("  of which skopeo copy"),
                Case("  of which umoci raw unpack"),
            )
            verified = "not run"
            for i in range(args.repeat):
                rootfs, cache = work / f"buildgen-{i}", work / f"cache-{i}"
                warm_rootfs, oci, peer_rootfs = (
                    work / f"buildgen-warm-{i}",
                    work / f"oci-{i}",
                    work / f"umoci-{i}",
                )

                def run_peer(oci: Path = oci, peer_rootfs: Path = peer_rootfs) -> None:
                    settle(oci, peer_rootfs)
                    copy = skopeo_copy(bench_ref, oci)
                    unpack = umoci_unpack(oci, peer_rootfs)
                    skopeo.runs.append(copy)
                    umoci.runs.append(unpack)
                    peer.runs.append(Run(copy.wall + unpack.wall, copy.cpu + unpack.cpu, copy.load))

                def run_cold(rootfs: Path = rootfs, cache: Path = cache) -> None:
                    settle(rootfs, cache)
                    cold.runs.append(buildgen(lock, rootfs, cache, work / "record.json"))

                def run_warm(warm_rootfs: Path = warm_rootfs, cache: Path = cache) -> None:
                    settle(warm_rootfs)
                    warm.runs.append(buildgen(lock, warm_rootfs, cache, work / "record.json"))

                def run_cold_overlay(i: int = i) -> None:
                    rootfs = work / f"buildgen-ov-{i}"
                    settle(rootfs)
                    cold_ov.runs.append(buildgen(lock, rootfs, work / f"cache-ov-{i}",
                                                 work / "record.json", "--overlay"))  # fmt: skip
                    unmount(rootfs)

                def run_warm_overlay(i: int = i) -> None:
                    rootfs = work / f"buildgen-ov-warm-{i}"
                    settle(rootfs)
                    warm_ov.runs.append(buildgen(lock, rootfs, work / f"cache-ov-{i}",
                                                 work / "record.json", "--overlay"))  # fmt: skip
                    unmount(rootfs)

                def run_baseline(i: int = i) -> None:
                    assert base is not None
                    for index, extra in enumerate(["", "--overlay"][: len(base_cases) // 2]):
                        cache = work / f"cache-base-{i}-{index}"
                        for phase in range(2):
                            rootfs = work / f"buildgen-base-{i}-{index}-{phase}"
                            settle(rootfs)
                            flags = [extra] if extra else []
                            run = buildgen(
                                lock, rootfs, cache, work / "record.json", *flags, source=base
                            )
                            base_cases[2 * index + phase].runs.append(run)
                            if extra:
                                unmount(rootfs)

                overlay = [] if no_overlay else [run_cold_overlay, run_warm_overlay]
                baseline = [run_baseline] if base is not None else []
                order = (
                    [run_peer, run_cold, run_warm, *overlay, *baseline]
                    if i % 2 == 0
                    else [*baseline, *overlay, run_cold, run_warm, run_peer]
                )
                for step in order:
                    log(f"run {i + 1}/{args.repeat}: {step.__name__[4:]}...")
                    step()
                if i == 0:
                    log("verifying: buildgen rootfs (without /opt/agent) == umoci rootfs...")
                    ok, detail = verify(rootfs, peer_rootfs)
                    verified = ("PASS: " if ok else "FAIL: ") + detail
                # Kept until the end: deleting 60,000 files right before the next case would
                # slow its file creation (ext4 skips recently freed inodes: see the doc above).
                os.sync()

            overlay_cases = [] if no_overlay else [cold_ov, warm_ov]
            report(args, image, [cold, warm, peer, skopeo, umoci, *overlay_cases, *base_cases],
                   verified, load_start)  # fmt: skip
            if base_cases:
                print(f"\nThis tree against {args.baseline}, measured in the same rounds "
                      "(median, this tree / baseline):\n")  # fmt: skip
                mine = [cold, warm, *overlay_cases]
                for new, old in zip(mine, base_cases, strict=False):
                    change = new.median / old.median
                    print(f"- {new.label}: {new.median:.1f} s vs {old.median:.1f} s: "
                          f"{change:.2f}x ({'within' if change <= 1.10 else 'NOT within'} "
                          "10% of before)")  # fmt: skip
            if no_overlay:
                print(f"\n--overlay not measured: cannot mount an overlay here ({no_overlay}).")
            slower = cold.median > peer.median
            if args.profile == "always" or (args.profile == "auto" and slower):
                profile(lock, work, client, registry.host, image)
    finally:
        if registry is not None:
            registry.stop()
        if args.baseline:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(work / "baseline")], capture_output=True)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nLoad average (1/5/15 min) at the end: {fmt_load(os.getloadavg())}.")


def fmt_load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def report(
    args: argparse.Namespace,
    image: dict[str, Any],
    cases: list[Case],
    verified: str,
    load_start: tuple[float, float, float],
) -> None:
    cold, warm, peer = cases[0], cases[1], cases[2]
    layers = image["benchmark"]["layers"]
    keys = ("files", "bytes", "dirs", "symlinks", "hardlinks", "whiteouts", "uncompressed", "size")
    n = {k: sum(x[k] for x in layers) for k in keys}
    agent = image["agent"]["layers"][0]
    print(
        "## buildgen materialize vs skopeo copy + umoci raw unpack "
        f"({args.files:,} files, {args.megabytes:,} MB)\n"
    )
    print(
        f"Benchmark image: {len(layers)} gzip layers, {n['files']:,} regular files holding "
        f"{n['bytes'] / 1e6:,.0f} MB ({n['uncompressed'] / 1e6:,.0f} MB of tar, "
        f"{n['size'] / 1e6:,.0f} MB compressed), {n['dirs']:,} directory entries, "
        f"{n['symlinks']:,} symlinks, {n['hardlinks']:,} hardlinks, {n['whiteouts']:,} "
        f"whiteouts. Agent image: {agent['files']:,} files, {agent['size'] / 1e6:.1f} MB "
        "compressed (buildgen pulls and fuses it too; the peer does not). Local registry on "
        "loopback.\n"
    )
    print(
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average at the "
        f"start {fmt_load(load_start)} (other processes were running). Page cache not dropped: "
        "every case reads registry blobs from memory; `sync` before each case.\n"
    )
    runs_header = " | ".join(f"run {i + 1} s" for i in range(len(cold.runs)))
    print(
        f"| case | {runs_header} | median s | best s | CPU s per run | load at start | "
        "median vs skopeo+umoci (time ratio) |"
    )
    print("|---|" + "---|" * (len(cold.runs) + 5))
    for case in cases:
        runs = " | ".join(f"{r.wall:.1f}" for r in case.runs)
        loads = ", ".join(f"{r.load:.1f}" for r in case.runs)
        cpus = ", ".join(f"{r.cpu:.1f}" for r in case.runs)
        vs = "1.00x (the peer)" if case is peer else ratio(case.median, peer.median)
        if case.label.startswith("  "):
            vs = f"{case.median / peer.median:.0%} of the peer"
        print(
            f"| {case.label} | {runs} | {case.median:.1f} | {case.best:.1f} | {cpus} | "
            f"{loads} | {vs} |"
        )

    def verdict(ok: bool) -> str:
        return "**MET**" if ok else "**NOT MET**"

    def goals(title: str, cold: Case, warm: Case) -> None:
        print(
            f"- {title}: cold no slower than the peer: {verdict(cold.median <= peer.median)} "
            f"on medians ({cold.median:.1f} s vs {peer.median:.1f} s; best runs "
            f"{cold.best:.1f} vs {peer.best:.1f} s); warm at least 2x faster than cold: "
            f"{verdict(warm.median * 2 <= cold.median)} ({cold.median / warm.median:.2f}x on "
            f"medians, {cold.best / warm.best:.2f}x on best runs)."
        )

    print("\nGoals, per way of making the rootfs:\n")
    if len(cases) > 5:
        goals(
            "`--overlay` (what the crane runner does where it may mount: the rootfs an overlay "
            "of the unpacked image)",
            cases[5],
            cases[6],
        )
    goals("a copy (the default of the command; the runner's without the privilege)", cold, warm)
    print(
        "\nA copy costs the kernel about what writing the files from the layers costs (creating "
        "60,000 inodes is most of both), so a warm copy can be at most a little more than 2x "
        "faster than a cold run, and the faster the extraction, the smaller that ratio."
    )
    print(f"Same rootfs (buildgen without /opt/agent vs umoci, run 1): {verified}")


if __name__ == "__main__":
    main()
