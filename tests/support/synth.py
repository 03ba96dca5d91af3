"""Synthetic per-platform images pushed straight to a registry, with a results file, as
`buildgen bake --push` would leave them: for publish tests and benchmarks at scale."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

from buildgen.build.results import ImageResult, PlatformResult, Pushed, Results
from buildgen.model.plan import Plan, PlannedImage
from buildgen.registry import OCI_MANIFEST, RegistryClient

CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def push_platform_image(
    client: RegistryClient, repository: str, platform: str, salt: str
) -> PlatformResult:
    """One small image for `platform` (a unique layer, a config naming the platform)."""
    os_, arch = platform.split("/")[:2]
    layer_digest, layer = _blob(f"layer {salt} {platform}\n".encode().ljust(1024, b"\0"))
    config = json.dumps({"architecture": arch, "os": os_, "rootfs": {"type": "layers",
                         "diff_ids": [layer_digest]}, "config": {}}).encode()  # fmt: skip
    config_digest, _ = _blob(config)
    for digest, data in ((layer_digest, layer), (config_digest, config)):
        if not client.blob_exists(repository, digest):
            client.upload_blob(repository, digest, data, len(data))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": len(layer)}],
    }).encode()  # fmt: skip
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    client.put_manifest(repository, digest, manifest, OCI_MANIFEST)
    return PlatformResult(Pushed(digest, OCI_MANIFEST, len(manifest)), layers_size=len(layer))


def push_synthetic(
    client: RegistryClient, plan: Plan, *, salt: str = "", workers: int = 16
) -> Results:
    """Push every image of `plan` for each of its platforms; return the results file."""
    results = Results(plan.registry, plan.catalog.digest, "all")

    def one(image: PlannedImage) -> ImageResult:
        platforms = {
            p: push_platform_image(client, image.repository, p, f"{image.key} {salt}")
            for p in image.platforms
        }
        return ImageResult(image.key, image.repository, image.inputs, platforms)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(one, plan.images):
            results.images[result.key] = result
    return results
