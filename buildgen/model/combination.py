"""The combination image's Dockerfile: the fusion rule (`model/fusion.py`) as COPY steps.

Its text is part of the combination's inputs hash, so the plan renders it; `buildgen bake`
writes it inline into the bake file.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path

import jinja2

from buildgen.model.fusion import Provided

TEMPLATES = Path(__file__).resolve().parent / "templates"


def template_environment(directory: Path) -> jinja2.Environment:
    """A jinja2 environment for buildgen's templates in `directory`: an undefined name is an
    error, nothing is escaped (every value is escaped for its language by a filter), and
    `json` renders a value as a JSON literal."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


@cache
def _environment() -> jinja2.Environment:
    return template_environment(TEMPLATES)


def combination_dockerfile(
    key: str, sources: Mapping[str, Sequence[Provided]], identity: Mapping[str, str] | None = None
) -> str:
    """The Dockerfile of a combination image: the fusion rule, from the paths each axis provides;
    with the pipeline among the sources, `identity` (EVAL_BENCHMARK, EVAL_TASK, ...: what the
    pipeline records in result.json) as ENV."""
    # Thousands of per-task combinations share their agent and gateway: render each rule once.
    rule = tuple((context, tuple(paths)) for context, paths in sources.items())
    text = _combination_dockerfile(rule).replace(_KEY_PLACEHOLDER, key, 1)
    if identity and "pipeline" in sources:
        pairs = " ".join(f"{name}={json.dumps(value)}" for name, value in identity.items())
        text += f"# What this eval is, for the pipeline's result.json.\nENV {pairs}\n"
    return text


_KEY_PLACEHOLDER = "\x00key\x00"


@lru_cache(maxsize=256)
def _combination_dockerfile(rule: tuple[tuple[str, tuple[Provided, ...]], ...]) -> str:
    sources = dict(rule)
    steps = [
        (
            context,
            index,
            provided,
            posixpath.dirname(provided.path),
            posixpath.basename(provided.path),
        )
        for index, (context, provided) in enumerate(
            (context, provided) for context, paths in sources.items() for provided in paths
        )
    ]
    template = _environment().get_template("combination.Dockerfile.j2")
    return template.render(key=_KEY_PLACEHOLDER, steps=steps, pipeline="pipeline" in sources)
