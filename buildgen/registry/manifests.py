"""Manifests and indexes: HEADs and GETs (one, or many at once for `lock`), and PUTs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

import httpx

from .errors import RegistryError, url_path
from .media import (
    MANIFEST_ACCEPT,
    Descriptor,
    Manifest,
    base_media_type,
    check_reference,
    digest_of,
    is_digest,
    sha256_digest,
)
from .reference import parse_repository
from .remote import Remote, api_url, pull, push
from .retry import BLOB_UNKNOWN_RETRIES

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def at_once(
    call: Callable[[int], _T],
    count: int,
    workers: int,
    each: Callable[[int, _T], None] | None = None,
) -> list[_T]:
    """`call(i)` for each i < count, `workers` at a time, in order; `each(i, result)` is called
    in this thread as each one arrives (in no set order). The first failure is raised, and the
    calls not yet started are dropped."""
    if count <= 1 or workers <= 1:
        results = []
        for index in range(count):
            results.append(result := call(index))
            if each is not None:
                each(index, result)
        return results
    found: dict[int, _T] = {}
    with ThreadPoolExecutor(min(workers, count)) as pool:
        futures = {pool.submit(call, index): index for index in range(count)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                found[index] = result = future.result()
                if each is not None:
                    each(index, result)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    return [found[index] for index in range(count)]


def _condition(etag: str | None) -> dict[str, str]:
    """The header that asks whether a tag still points at the digest `etag`."""
    return {} if etag is None else {"If-None-Match": f'"{etag}"'}


def _statuses(method: str, missing_ok: bool, etag: str | None) -> tuple[int, ...]:
    """The answers to a manifest request: 200; 404 to a HEAD (or to a GET when `missing_ok`);
    304 when asked with If-None-Match."""
    found = (200, 404) if method == "HEAD" or missing_ok else (200,)
    return (*found, 304) if etag is not None else found


def _told(response: httpx.Response, reference: str) -> Descriptor | None:
    """The descriptor a HEAD answer tells in its headers, or None when it does not tell all."""
    digest = response.headers.get("Docker-Content-Digest", "")
    length = response.headers.get("Content-Length", "")
    media_type = base_media_type(response.headers.get("Content-Type"))
    if not is_digest(digest) and is_digest(reference):
        digest = reference
    if not is_digest(digest) or not length.isdigit() or not media_type:
        return None
    return Descriptor(digest=digest, media_type=media_type, size=int(length))


def _declared_media_type(data: bytes) -> str | None:
    try:
        parsed = Manifest("", "", data).json()
    except ValueError:
        return None
    media_type = parsed.get("mediaType")
    return str(media_type) if isinstance(media_type, str) else None


class Manifests:
    """The manifest requests of a client (see `RegistryClient` for what each method does)."""

    def __init__(self, remote: Remote) -> None:
        self._remote = remote

    def head(self, repository: str, reference: str) -> Descriptor | None:
        response = self._request("HEAD", repository, reference)
        return self._descriptors([response], [(repository, reference)], workers=1)[0]

    def heads(self, items: Sequence[tuple[str, str]], workers: int) -> list[Descriptor | None]:
        return self._descriptors(self._requests("HEAD", items, workers), items, workers)

    def tag_digests(
        self, items: Sequence[tuple[str, str]], believed: Sequence[str | None], workers: int
    ) -> list[str | None]:
        # distribution answers 304 to a digest reference without looking it up: only tags
        # are asked conditionally.
        etags = [
            digest if isinstance(digest, str) and is_digest(digest) and not is_digest(tag) else None
            for (_, tag), digest in zip(items, believed, strict=True)
        ]
        responses = self._requests("HEAD", items, workers, etags=etags)
        digests = list(etags)  # what a 304 confirms; the others are replaced below
        told = [i for i, r in enumerate(responses) if r.status_code != 304 or etags[i] is None]
        found = self._descriptors([responses[i] for i in told], [items[i] for i in told], workers)
        for index, descriptor in zip(told, found, strict=True):
            digests[index] = descriptor.digest if descriptor is not None else None
        return digests

    def get(self, repository: str, reference: str) -> Manifest:
        return self._manifest(repository, reference, self._request("GET", repository, reference))

    def gets(
        self,
        items: Sequence[tuple[str, str]],
        workers: int,
        each: Callable[[int, Manifest | None], None] | None = None,
    ) -> list[Manifest | None]:
        def one(index: int) -> Manifest | None:
            response = self._request("GET", *items[index], missing_ok=True)
            return None if response.status_code == 404 else self._manifest(*items[index], response)

        return at_once(one, len(items), workers, each)

    def put(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        repo, host = self._remote.target(repository)
        check_reference(reference)
        digest = sha256_digest(data)
        if is_digest(reference) and digest_of(data, reference) != reference:
            raise ValueError(f"manifest bytes do not match the digest {reference} to put them at")
        url = api_url(host, repo, f"manifests/{reference}")
        for attempt in range(BLOB_UNKNOWN_RETRIES + 1):
            response = self._remote.call(
                "PUT",
                host,
                url,
                kind="PUT manifest",
                scopes=push(repo),
                headers={"Content-Type": media_type},
                body=data,
            )
            if response.status_code in (200, 201, 202, 204):
                break
            error = self._remote.status_error(response, "PUT", url)
            if "MANIFEST_BLOB_UNKNOWN" in error.codes and attempt < BLOB_UNKNOWN_RETRIES:
                log.debug("PUT %s: %s; retrying", url_path(url), error)
                self._remote.session.pause(attempt)
                continue
            raise error
        announced = response.headers.get("Docker-Content-Digest", "")
        if is_digest(announced) and digest_of(data, announced) != announced:
            raise RegistryError(
                f"{repo.registry} stored manifest {repo}:{reference} as {announced}, "
                f"but its bytes are {digest_of(data, announced)}",
                status=response.status_code,
                method="PUT",
                path=url_path(url),
            )
        return digest

    # -- internals ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        repository: str,
        reference: str,
        *,
        missing_ok: bool = False,
        etag: str | None = None,
    ) -> httpx.Response:
        """A HEAD or GET of a manifest, accepting all four types: 200, or 404 to a HEAD (or to
        a GET when `missing_ok`; else NotFound), or 304 when `etag` is sent as If-None-Match;
        anything else an error."""
        repo, host = self._remote.target(repository)
        check_reference(reference)
        url = api_url(host, repo, f"manifests/{reference}")
        headers = {"Accept": MANIFEST_ACCEPT, **_condition(etag)}
        response = self._remote.call(
            method, host, url, kind=f"{method} manifest", scopes=pull(repo), headers=headers
        )
        expected = _statuses(method, missing_ok, etag)
        if response.status_code == 404 and 404 not in expected:
            what = f"manifest {repo}:{reference} not found"
            raise self._remote.not_found(response, "GET", url, what)
        self._remote.expect(response, expected, method, url)
        return response

    def _requests(
        self,
        method: str,
        items: Sequence[tuple[str, str]],
        workers: int,
        *,
        etags: Sequence[str | None] | None = None,
    ) -> list[httpx.Response]:
        """`_request` of each (repository, reference), `workers` at a time, in order."""
        conditions = etags if etags is not None else [None] * len(items)

        def one(index: int) -> httpx.Response:
            return self._request(method, *items[index], etag=conditions[index])

        return at_once(one, len(items), workers)

    def _descriptors(
        self, responses: Sequence[httpx.Response], items: Sequence[tuple[str, str]], workers: int
    ) -> list[Descriptor | None]:
        """The descriptors that HEAD answers give (None for a 404). Not every registry tells
        all on a HEAD: those are completed from the manifests' bytes, read many at once."""
        found = [
            None if response.status_code == 404 else _told(response, reference)
            for response, (_, reference) in zip(responses, items, strict=True)
        ]
        untold = [i for i, r in enumerate(responses) if r.status_code != 404 and not found[i]]
        if untold:
            manifests = self.gets([items[i] for i in untold], workers)
            for index, manifest in zip(untold, manifests, strict=True):
                found[index] = manifest.descriptor if manifest is not None else None
        return found

    def _manifest(self, repository: str, reference: str, response: httpx.Response) -> Manifest:
        """The manifest a GET answered, its bytes checked against the digest asked for, else
        the one the registry announced."""
        data = response.content
        announced = response.headers.get("Docker-Content-Digest", "")
        expected = reference if is_digest(reference) else None
        if expected is None and is_digest(announced):
            expected = announced
        if expected is None:
            digest = sha256_digest(data)
        else:  # hashed once, with the algorithm of the digest it must match
            actual = digest_of(data, expected)
            if actual != expected:
                repo = parse_repository(repository)
                source = (
                    "the digest asked for" if expected == reference else "Docker-Content-Digest"
                )
                raise RegistryError(
                    f"manifest {repo}@{reference} from {repo.registry} does not match "
                    f"{source}: expected {expected}, its bytes are {actual}",
                    status=response.status_code,
                    code="DIGEST_INVALID",
                    method="GET",
                    path=url_path(response.url),
                )
            digest = expected
        media_type = base_media_type(response.headers.get("Content-Type"))
        if not media_type or media_type in ("application/json", "application/octet-stream"):
            media_type = _declared_media_type(data) or media_type
        return Manifest(digest=digest, media_type=media_type, data=data)
