"""Warm a new server before it takes traffic: crawl its site on its own address.

A fresh server has cold caches; the first users who reach it pay for that. The crawler
requests the new server directly (not the load balancer), starts from the spec's paths and
sitemap (sitemap indexes included), follows links within the same host (HTML `a`, `link`,
`img`, `script`), and stays within its limits: pages, concurrency and time. Links are
extracted and sitemaps parsed with lxml; requests go through httpx."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx
from lxml import etree, html

from .spec import WarmupSpec

FOLLOWED_TAGS = {"a", "link", "img", "script"}
SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
MAX_SITEMAPS = 50  # an index of indexes of ... stops somewhere


@dataclass
class WarmupResult:
    planned: int = 0  # pages the crawl set out to warm (within max_pages)
    fetched: int = 0
    succeeded: int = 0
    bytes: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    errors: Counter = field(default_factory=Counter)

    @property
    def failures(self) -> int:
        return self.fetched - self.succeeded

    @property
    def share(self) -> float:
        """Succeeded pages over planned ones: a page not fetched in time counts as failed."""
        return self.succeeded / self.planned if self.planned else 0.0

    def passed(self, spec: WarmupSpec) -> bool:
        return self.planned > 0 and self.share >= spec.min_success

    def summary(self) -> str:
        text = f"{self.succeeded}/{self.planned} pages warmed ({self.share:.0%}), {self.bytes} bytes in {self.seconds:.2f}s"
        if self.timed_out:
            text += ", time limit reached"
        if self.errors:
            text += ", errors: " + ", ".join(f"{k} x{v}" for k, v in self.errors.most_common(3))
        return text


def same_host_links(document: bytes, page_url: str) -> list[str]:
    """Links of an HTML page (a, link, img, script) that stay on the page's host, without
    fragments, in document order."""
    try:
        tree = html.fromstring(document)
    except (etree.ParserError, ValueError):
        return []
    host = urlsplit(page_url).netloc
    links = []
    for element, _attribute, link, _pos in tree.iterlinks():
        if element.tag not in FOLLOWED_TAGS:
            continue
        url = urldefrag(urljoin(page_url, link.strip())).url
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc == host:
            links.append(url)
    return links


def parse_sitemap(document: bytes) -> tuple[list[str], list[str]]:
    """(page URLs, child sitemap URLs) of a sitemap or a sitemap index."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(document, parser)
    except etree.XMLSyntaxError:
        return [], []
    locs = [loc.text.strip() for loc in root.iter(f"{SITEMAP_NS}loc", "loc") if loc.text and loc.text.strip()]
    if etree.QName(root).localname == "sitemapindex":
        return [], locs
    return locs, []


def on_server(url: str, base_url: str) -> str:
    """The same path and query on the server being warmed (sitemaps name the public host)."""
    parts = urlsplit(url)
    return urljoin(base_url, parts.path + (f"?{parts.query}" if parts.query else ""))


class Crawler:
    def __init__(self, base_url: str, spec: WarmupSpec):
        self.base_url = base_url.rstrip("/") + "/"
        self.spec = spec
        self.result = WarmupResult()
        self.seen: set[str] = set()
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def schedule(self, url: str) -> None:
        if url in self.seen or self.result.planned >= self.spec.max_pages:
            return
        self.seen.add(url)
        self.result.planned += 1
        self.queue.put_nowait(url)

    async def run(self) -> WarmupResult:
        started = time.monotonic()
        limits = httpx.Limits(max_connections=self.spec.concurrency, max_keepalive_connections=self.spec.concurrency)
        async with httpx.AsyncClient(limits=limits, follow_redirects=False, timeout=self.spec.request_timeout) as client:
            try:
                await asyncio.wait_for(self._crawl(client), timeout=self.spec.timeout)
            except asyncio.TimeoutError:
                self.result.timed_out = True
        self.result.seconds = time.monotonic() - started
        return self.result

    async def _crawl(self, client: httpx.AsyncClient) -> None:
        if self.spec.sitemap:
            await self._read_sitemaps(client, urljoin(self.base_url, self.spec.sitemap.lstrip("/")))
        for path in self.spec.paths:
            self.schedule(urljoin(self.base_url, path.lstrip("/")))
        workers = [asyncio.create_task(self._worker(client)) for _ in range(self.spec.concurrency)]
        try:
            await self.queue.join()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _read_sitemaps(self, client: httpx.AsyncClient, first: str) -> None:
        pending, read = [first], 0
        while pending and read < MAX_SITEMAPS:
            url = pending.pop(0)
            read += 1
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                self.result.errors[f"sitemap {type(exc).__name__}"] += 1
                continue
            self.result.bytes += len(response.content)
            if response.status_code != 200:
                self.result.errors[f"sitemap HTTP {response.status_code}"] += 1
                continue
            pages, children = parse_sitemap(response.content)
            pending += [on_server(child, self.base_url) for child in children]
            for page in pages:
                self.schedule(on_server(page, self.base_url))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while True:
            url = await self.queue.get()
            try:
                await self._fetch(client, url)
            finally:
                self.queue.task_done()

    async def _fetch(self, client: httpx.AsyncClient, url: str) -> None:
        self.result.fetched += 1
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            self.result.errors[type(exc).__name__] += 1
            return
        self.result.bytes += len(response.content)
        if response.status_code not in self.spec.success_codes:
            self.result.errors[f"HTTP {response.status_code}"] += 1
            return
        self.result.succeeded += 1
        if "html" in response.headers.get("content-type", ""):
            for link in same_host_links(response.content, str(response.url)):
                self.schedule(link)


def warm(base_url: str, spec: WarmupSpec) -> WarmupResult:
    """Crawl `base_url` within the spec's limits (its own event loop: called from a thread)."""
    return asyncio.run(Crawler(base_url, spec).run())
