"""Load YAML into plain data while remembering where every value came from.

PyYAML keeps the last of two duplicate keys without a word; here a duplicate is an error. Each
value's position is kept by its path (a tuple of keys and indexes) so that every later check can
report `PATH:LINE:COL`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

import yaml

from buildgen.errors import Location, Problem

Path = tuple[str | int, ...]

try:  # libyaml's composer is several times faster on large catalogs
    _Loader: type[yaml.SafeLoader | yaml.CSafeLoader] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


@dataclass
class Document:
    """Plain data from a YAML file, with positions of values and keys by path."""

    path: str
    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    raw: dict[Path, str] = field(default_factory=dict)  # source text of non-string scalars

    def at(self, path: Path, *, key: bool = False) -> Location:
        """The location of the value (or, with key=True, of the key) at `path`.

        A path that has no position of its own (a missing key, a pydantic-internal suffix) is
        reported at its nearest ancestor that has one.
        """
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                line, col = table[probe]
                return Location(self.path, line, col)
            if key and probe in self.values:
                line, col = self.values[probe]
                return Location(self.path, line, col)
            probe = probe[:-1]
        line, col = self.values.get((), (1, 1))
        return Location(self.path, line, col)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self, doc: Document, loader: yaml.SafeLoader | yaml.CSafeLoader) -> None:
        self.doc = doc
        self.loader = loader
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.doc.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node, deep=True)
        if not isinstance(value, str):
            self.doc.raw[path] = node.value
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                self._problem(node, "string contains an unpaired surrogate escape")
            else:
                if not value.isascii() and not unicodedata.is_normalized("NFC", value):
                    # HCL (the bake file) normalizes every string to NFC: such a value would
                    # reach the build with other bytes than the catalog has.
                    self._problem(
                        node,
                        "string is not in Unicode normalization form C (NFC); write it precomposed",
                    )
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        pairs, merged = self._pairs(node)
        explicit = [(self._key(key_node), key_node, value_node) for key_node, value_node in pairs]
        explicit_keys = {key for key, _, _ in explicit}
        # YAML merge keys (`<<: *anchor`): explicit keys win over merged ones, and earlier
        # merged mappings over later ones; only two explicit keys of one name are duplicates.
        first_seen: dict[str, yaml.Node] = {}
        entries: list[tuple[str, yaml.Node, yaml.Node]] = []
        for key_node, value_node in merged:
            key = self._key(key_node)
            if key is None or key in explicit_keys or key in first_seen:
                continue
            first_seen[key] = key_node
            entries.append((key, key_node, value_node))
        for key, key_node, value_node in explicit:
            if key is None:
                self._problem(key_node, "a mapping key must be a plain value")
                continue
            if key in first_seen and first_seen[key] is not key_node:
                line, _ = _mark(first_seen[key])
                self._problem(key_node, f"duplicate key {key!r} (first defined on line {line})")
                continue
            first_seen[key] = key_node
            entries.append((key, key_node, value_node))
        result: dict[str, Any] = {}
        for key, key_node, value_node in entries:
            child: Path = (*path, key)
            self.doc.keys[child] = _mark(key_node)
            result[key] = self.build(value_node, child)
        return result

    def _key(self, node: yaml.Node) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            return None
        key = self.loader.construct_object(node)
        # YAML reads `1:`, `true:` or `null:` as non-strings; every key here is a name.
        return key if isinstance(key, str) else str(node.value)

    def _pairs(
        self, node: yaml.MappingNode
    ) -> tuple[list[tuple[yaml.Node, yaml.Node]], list[tuple[yaml.Node, yaml.Node]]]:
        explicit: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != "tag:yaml.org,2002:merge":
                explicit.append((key_node, value_node))
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if isinstance(source, yaml.MappingNode):
                    inner_explicit, inner_merged = self._pairs(source)
                    merged += inner_explicit + inner_merged
                else:
                    self._problem(source, "a merge key '<<' must name a mapping")
        return explicit, merged

    def _problem(self, node: yaml.Node, message: str) -> None:
        line, col = _mark(node)
        self.problems.append(Problem(Location(self.doc.path, line, col), message))


def load(text: str, path: str) -> tuple[Document, list[Problem]]:
    """Parse one YAML document; syntax errors and duplicate keys come back as problems."""
    doc = Document(path=path, data=None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return doc, [Problem(Location(path, 1, 1), "the file is empty")]
        builder = _Builder(doc, loader)
        doc.data = builder.build(node, ())
        return doc, builder.problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p) or "invalid YAML"
        return doc, [Problem(Location(path, line, col), f"YAML syntax error: {message}")]
    except yaml.YAMLError as exc:
        return doc, [Problem(Location(path, 1, 1), f"YAML error: {exc}")]
    finally:
        loader.dispose()
