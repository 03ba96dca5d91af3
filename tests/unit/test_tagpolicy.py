"""The tag policy as a table: stable, backport, prerelease, re-publish, per-task, unversioned."""

from __future__ import annotations

import pytest

from buildgen.model.tagpolicy import inputs_tag, plan_tags

H = "sha256:" + "ab" * 32
TAG = inputs_tag(H)


@pytest.mark.parametrize(
    ("case", "version", "task", "existing", "immutable", "moving"),
    [
        ("first release", "1.0.0", None, [], ["1.0.0"], ["1.0", "1", "latest", TAG]),
        ("newer patch", "1.0.1", None, ["1.0.0", "1.0", "1", "latest"], ["1.0.1"], ["1.0", "1", "latest", TAG]),
        ("new major", "2.0.0", None, ["1.4.2", "1.4", "1", "latest"], ["2.0.0"], ["2.0", "2", "latest", TAG]),
        ("backport patch", "1.4.3", None, ["1.4.2", "2.0.0", "2.0", "2", "1.4", "1", "latest"], ["1.4.3"], ["1.4", "1", TAG]),
        ("backport to old minor", "1.3.9", None, ["1.3.8", "1.4.2", "2.0.0"], ["1.3.9"], ["1.3", TAG]),
        ("older than everything", "0.9.0", None, ["1.0.0", "0.9.1"], ["0.9.0"], [TAG]),
        ("re-publish of the newest", "2.0.0", None, ["2.0.0", "2.0", "2", "latest", "1.0.0"], ["2.0.0"], ["2.0", "2", "latest", TAG]),
        ("re-publish of a backport", "1.4.3", None, ["1.4.3", "2.0.0"], ["1.4.3"], ["1.4", "1", TAG]),
        ("prerelease", "3.0.0-rc.1", None, ["2.0.0"], ["3.0.0-rc.1"], [TAG]),
        ("prerelease ignored when ranking", "2.1.0", None, ["3.0.0-rc.1", "2.0.0"], ["2.1.0"], ["2.1", "2", "latest", TAG]),
        ("non-semver tags ignored", "1.0.0", None, ["latest", "nightly", "inputs-00", "v9.9.9"], ["1.0.0"], ["1.0", "1", "latest", TAG]),
        ("per-task image", "1.2.0", "django__django-11099", ["9.9.9"], [], ["django__django-11099", TAG]),
        ("no version", None, None, [], [], ["latest", TAG]),
    ],
)  # fmt: skip
def test_tag_policy(
    case: str,
    version: str | None,
    task: str | None,
    existing: list[str],
    immutable: list[str],
    moving: list[str],
) -> None:
    plan = plan_tags(version=version, task=task, inputs=H, existing=existing)
    assert (list(plan.immutable), list(plan.moving)) == (immutable, moving), case


def test_inputs_tag_is_a_valid_tag() -> None:
    assert TAG == "inputs-" + "ab" * 16
