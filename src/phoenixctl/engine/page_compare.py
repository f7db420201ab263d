"""Two sites compared page by page (a drill's copy against the environment it copies): the
pages of one crawled as its warm-up would (paths, sitemap, links on the same host, up to
max_pages), each fetched from both, status and body compared with the names that differ by
design (server ids, the balancers' addresses) masked."""

from __future__ import annotations

import re
from collections import deque
from urllib.parse import urlsplit

from ..spec import WarmupSpec


def crawl_and_compare(base: str, other: str, spec: WarmupSpec, masks: list[str]) -> tuple[int, list[tuple[str, str]]]:
    """(pages compared, [(path, what differed)])."""
    import httpx  # here: only a drill compares pages
    from ..warmup import on_server, parse_sitemap, same_host_links

    pattern = re.compile("|".join(re.escape(m) for m in sorted(set(masks), key=len, reverse=True))) if masks else None

    def masked(body: bytes) -> bytes:
        return pattern.sub("*", body.decode("utf-8", "replace")).encode() if pattern else body

    differed: list[tuple[str, str]] = []
    queue: deque[str] = deque(spec.paths)
    seen: set[str] = set(spec.paths)
    with httpx.Client(timeout=spec.request_timeout) as client:
        if spec.sitemap:
            response = client.get(base + spec.sitemap)
            if response.status_code == 200:
                for url in parse_sitemap(response.content)[0]:
                    path = urlsplit(on_server(url, base)).path
                    if path not in seen:
                        seen.add(path)
                        queue.append(path)
        compared = 0
        while queue and compared < spec.max_pages:
            path = queue.popleft()
            here, there = client.get(base + path), client.get(other + path)
            compared += 1
            if here.status_code != there.status_code:
                differed.append((path, f"HTTP {here.status_code} against {there.status_code}"))
            elif masked(here.content) != masked(there.content):
                differed.append((path, f"the bodies differ ({len(here.content)} and {len(there.content)} bytes)"))
            if "html" in here.headers.get("content-type", ""):
                for link in same_host_links(here.content, base + path):
                    linked = urlsplit(link).path
                    if linked not in seen:
                        seen.add(linked)
                        queue.append(linked)
    return compared, differed
