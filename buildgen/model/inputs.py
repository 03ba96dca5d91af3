"""Build-inputs hashes: what an image is made from, so an unchanged image can be recognised.

An image's hash covers the files of its context the build can see (`.dockerignore` applied),
its Dockerfile, build args, labels, platforms, build stage and the hashes of the images it is
built on. It is stable across machines and checkouts: paths are relative, and of a file's
metadata only the executable bit counts (git keeps nothing else).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildgen.fsutil import sha256_file

HASH_VERSION = "buildgen-inputs/1"


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    negated: bool


def _translate(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus '**') as a regex over '/'-paths."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # '**/' matches zero or more directories
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


class DockerIgnore:
    """The exclusion rules of one .dockerignore, as BuildKit applies them to a context."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.patterns: list[_Pattern] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:].strip()
            line = os.path.normpath(line).replace(os.sep, "/").lstrip("/")
            if line in ("", "."):
                continue
            self.patterns.append(_Pattern(_translate(line), negated))

    def excluded(self, path: str) -> bool:
        """Whether the context path `path` ('a/b/c') is left out of the build context."""
        parents = _parents(path)
        result = False
        for pattern in self.patterns:
            # A pattern that matches a directory excludes (or re-includes) everything below it.
            if any(pattern.regex.fullmatch(p) for p in parents):
                result = not pattern.negated
        return result

    def may_contain_included(self, directory: str) -> bool:
        """Whether an excluded directory can still hold re-included files ('!' rules)."""
        return any(p.negated for p in self.patterns)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def load_dockerignore(context: Path, dockerfile: Path | None) -> DockerIgnore:
    """BuildKit's choice: `<Dockerfile>.dockerignore` next to the Dockerfile, else the context's."""
    candidates = [Path(f"{dockerfile}.dockerignore")] if dockerfile is not None else []
    candidates.append(context / ".dockerignore")
    for candidate in candidates:
        if candidate.is_file():
            return DockerIgnore(candidate.read_text(encoding="utf-8").splitlines())
    return DockerIgnore([])


def context_digest(context: Path, dockerfile: Path | None) -> str:
    """The digest of the files a build of `context` can see (names, content, exec bit, links)."""
    ignore = load_dockerignore(context, dockerfile)
    digest = hashlib.sha256()
    for rel, full in _walk(context, ignore):
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            entry = f"l {rel} {os.readlink(full)}"
        elif stat.S_ISDIR(st.st_mode):
            entry = f"d {rel}"
        else:
            entry = f"f {rel} {'x' if st.st_mode & 0o111 else '-'} {sha256_file(full)}"
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\0")
    return "sha256:" + digest.hexdigest()


def _walk(context: Path, ignore: DockerIgnore) -> Iterable[tuple[str, str]]:
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        full_dir = os.path.join(context, rel_dir) if rel_dir else str(context)
        try:
            entries = sorted(os.scandir(full_dir), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if ignore.excluded(rel):
                if is_dir and ignore.may_contain_included(rel):
                    subdirs.append(rel)
                continue
            yield rel, entry.path
            if is_dir:
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def inputs_hash(
    *,
    context: str | None,
    dockerfile: str | None,
    dockerfile_inline: str | None,
    stage: str | None,
    args: dict[str, str],
    labels: dict[str, str],
    platforms: Sequence[str],
    dependencies: dict[str, str],
) -> str:
    """The build-inputs hash of one image, from already-computed parts."""
    document = {
        "v": HASH_VERSION,
        "context": context,
        "dockerfile": dockerfile,
        "dockerfile_inline": dockerfile_inline,
        "stage": stage,
        "args": args,
        "labels": labels,
        "platforms": list(platforms),
        "dependencies": dependencies,
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(encoded.encode("utf-8", "surrogateescape")).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of one file (Dockerfiles)."""
    return sha256_file(path)
