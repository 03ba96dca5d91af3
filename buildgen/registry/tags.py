"""Tag listing, following Link pagination."""

from __future__ import annotations

import urllib.parse

from .errors import RegistryError, url_path
from .remote import Remote, api_url, pull


def list_tags(remote: Remote, repository: str, page_size: int) -> list[str]:
    """Every tag of the repository ([] when it does not exist), `page_size` asked per page."""
    repo, host = remote.target(repository)
    url: str | None = api_url(host, repo, "tags/list") + f"?n={page_size}"
    tags: list[str] = []
    seen: set[str] = set()
    while url is not None:
        if url in seen:
            raise RegistryError(f"tag listing of {repo} loops back to {url_path(url)}")
        response = remote.call("GET", host, url, kind="GET tags", scopes=pull(repo))
        if response.status_code == 404 and not seen:
            return []  # NAME_UNKNOWN: no such repository, so no tags
        seen.add(url)
        remote.expect(response, (200,), "GET", url)
        try:
            page = response.json()
        except ValueError:
            page = None
        names = page.get("tags") if isinstance(page, dict) else None
        if names is not None and not (
            isinstance(names, list) and all(isinstance(t, str) for t in names)
        ):
            raise RegistryError(f"{repo.registry} sent a malformed tag list for {repo}")
        tags.extend(names or [])
        link = response.links.get("next", {}).get("url")
        url = urllib.parse.urljoin(str(response.url), link) if link else None
    return tags
