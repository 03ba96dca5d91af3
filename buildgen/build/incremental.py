"""Skip what did not change: an image whose inputs-hash tag is already in the registry is
unchanged (one HEAD each), so it is not built again and publish reuses its index."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from buildgen.model.tagpolicy import inputs_tag

if TYPE_CHECKING:
    from buildgen.model.plan import PlannedImage
    from buildgen.registry import RegistryClient

log = logging.getLogger(__name__)


def published(
    images: Iterable[PlannedImage], client: RegistryClient, *, workers: int = 32
) -> dict[str, str]:
    """key -> `repository@digest` of every image already published with its current inputs."""

    def one(image: PlannedImage) -> tuple[str, str | None]:
        found = client.head_manifest(image.repository, inputs_tag(image.inputs))
        return image.key, f"{image.repository}@{found.digest}" if found else None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return {key: ref for key, ref in pool.map(one, list(images)) if ref is not None}
