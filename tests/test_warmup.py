"""Warm-up (issue 4): the crawler against real HTTP servers, then as a gate of rotations."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import httpx
import pytest
import yaml
from aiohttp import web

from conftest import CI_COUNTS, PRODUCTION_COUNTS, copy_example, destroy_quietly
from phoenixctl.errors import GateFailed
from phoenixctl.engine import Executor, Project
from phoenixctl.spec import WarmupSpec
from phoenixctl.warmup import parse_sitemap, same_host_links, warm


class Site:
    """A real aiohttp server on 127.0.0.1 in its own thread, counting requests per path."""

    def __init__(self, routes):
        self.hits: Counter = Counter()
        self.app = web.Application(middlewares=[self._count])
        self.app.add_routes(routes)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @web.middleware
    async def _count(self, request, handler):
        self.hits[request.path] += 1
        return await handler(request)

    def __enter__(self) -> "Site":
        self.thread.start()
        self.runner = web.AppRunner(self.app)
        asyncio.run_coroutine_threadsafe(self.runner.setup(), self.loop).result(10)
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(site.start(), self.loop).result(10)
        self.port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def answer(make_response):
    """An async handler that answers with a fresh response each time."""

    async def handler(request):
        return make_response()

    return handler


def html_page(*links: str) -> web.Response:
    body = "".join(f'<a href="{link}">x</a>' for link in links)
    return web.Response(text=f"<html><body>{body}</body></html>", content_type="text/html")


def spec(**fields) -> WarmupSpec:
    return WarmupSpec(**{"concurrency": 4, "timeout": 10, **fields})


# --- link extraction and sitemaps ---------------------------------------------------------------


def test_links_of_a_page_stay_on_its_host():
    document = b"""<html><head><link rel="stylesheet" href="/site.css"><script src="app.js"></script>
    <link rel="canonical" href="http://127.0.0.1:8080/canonical"></head><body>
    <a href="/a#section">a</a> <a href="b?x=1">b</a> <a href="http://other.example/c">c</a>
    <a href="https://127.0.0.1:9999/d">other port</a> <a href="mailto:x@example.com">m</a>
    <img src="/img/logo.png"> <iframe src="/frame"></iframe> <form action="/post"></form></body></html>"""
    links = same_host_links(document, "http://127.0.0.1:8080/dir/page")
    assert links == [
        "http://127.0.0.1:8080/site.css",
        "http://127.0.0.1:8080/dir/app.js",
        "http://127.0.0.1:8080/canonical",
        "http://127.0.0.1:8080/a",
        "http://127.0.0.1:8080/dir/b?x=1",
        "http://127.0.0.1:8080/img/logo.png",
    ]


def test_links_of_garbage_are_none():
    assert same_host_links(b"", "http://127.0.0.1/") == []
    assert same_host_links(b"\x00\xff not html", "http://127.0.0.1/") == []


def test_sitemap_and_sitemap_index():
    urlset = b"""<?xml version="1.0" encoding="UTF-8"?>
    <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
      <url><loc>https://www.example.test/</loc></url><url><loc> https://www.example.test/p/1 </loc></url>
    </urlset>"""
    index = b"""<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
      <sitemap><loc>https://www.example.test/sm1.xml</loc></sitemap></sitemapindex>"""
    assert parse_sitemap(urlset) == (["https://www.example.test/", "https://www.example.test/p/1"], [])
    assert parse_sitemap(index) == ([], ["https://www.example.test/sm1.xml"])
    assert parse_sitemap(b"<not xml") == ([], [])
    # entities are not resolved (no billion laughs, no file reads)
    evil = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
    <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>&e;</loc></url></urlset>"""
    assert all("root:" not in url for url in parse_sitemap(evil)[0])


# --- the crawler against real servers -------------------------------------------------------


def test_page_limit_on_a_site_with_thousands_of_pages():
    async def page(request):
        n = int(request.match_info["n"])
        return html_page(*(f"/p/{n * 7 + k}" for k in range(1, 8)), "http://other.example/x", "/p/0")

    with Site([web.get("/", answer(lambda: html_page("/p/0"))), web.get("/p/{n}", page)]) as site:
        result = warm(site.url, spec(max_pages=50))
    assert result.planned == 50 and result.fetched == 50 and result.succeeded == 50
    assert sum(site.hits.values()) == 50  # never more requests than pages allowed
    assert max(site.hits.values()) == 1  # each page once, link loops back to /p/0 included
    assert result.share == 1.0 and not result.timed_out


def test_link_loop_ends():
    routes = [
        web.get("/", answer(lambda: html_page("/a", "/"))),
        web.get("/a", answer(lambda: html_page("/b", "/"))),
        web.get("/b", answer(lambda: html_page("/a", "/b#top"))),
    ]
    with Site(routes) as site:
        result = warm(site.url, spec())
    assert (result.planned, result.fetched, result.succeeded) == (3, 3, 3)
    assert dict(site.hits) == {"/": 1, "/a": 1, "/b": 1}


def test_time_limit_stops_the_crawl_and_fails_the_share():
    async def slow(request):
        await asyncio.sleep(0.4)
        n = int(request.match_info["n"])
        return html_page(*(f"/p/{n * 3 + k}" for k in range(1, 4)))

    with Site([web.get("/", answer(lambda: html_page("/p/0"))), web.get("/p/{n}", slow)]) as site:
        started = time.monotonic()
        result = warm(site.url, spec(timeout=1.0, concurrency=2, max_pages=100))
        elapsed = time.monotonic() - started
    assert result.timed_out
    assert elapsed < 4.0  # the limit holds (plus one request in flight; unlimited it would take ~20 s)
    assert 0 < result.fetched < result.planned
    assert not result.passed(spec(min_success=0.95))


def test_sitemap_index_pages_are_warmed_on_the_server_itself():
    def sitemap(urls):
        body = "".join(f"<url><loc>{u}</loc></url>" for u in urls)
        return web.Response(
            text=f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>', content_type="application/xml"
        )

    index = lambda: web.Response(  # noqa: E731
        text='<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        "<sitemap><loc>https://www.example.test/sm1.xml</loc></sitemap>"
        "<sitemap><loc>https://www.example.test/sm2.xml</loc></sitemap></sitemapindex>",
        content_type="application/xml",
    )
    routes = [
        web.get("/sitemap.xml", answer(index)),
        web.get("/sm1.xml", answer(lambda: sitemap([f"https://www.example.test/doc/{n}" for n in range(5)]))),
        web.get("/sm2.xml", answer(lambda: sitemap([f"https://www.example.test/doc/{n}" for n in range(5, 9)]))),
        web.get("/doc/{n}", answer(lambda: web.Response(text="plain", content_type="text/plain"))),
        web.get("/", answer(lambda: html_page())),
    ]
    with Site(routes) as site:
        result = warm(site.url, spec(sitemap="/sitemap.xml"))
    assert result.planned == 10 and result.succeeded == 10  # 9 documents and /
    assert all(site.hits[f"/doc/{n}"] == 1 for n in range(9))
    assert site.hits["/sm1.xml"] == site.hits["/sm2.xml"] == 1


def test_a_server_that_serves_errors_fails():
    routes = [web.get("/", answer(lambda: html_page("/x"))), web.get("/x", answer(lambda: web.Response(status=500)))]
    with Site(routes) as site:
        result = warm(site.url, spec())
    assert (result.planned, result.succeeded, result.failures) == (2, 1, 1)
    assert result.errors == Counter({"HTTP 500": 1})
    assert not result.passed(spec(min_success="95%")) and result.passed(spec(min_success=0.5))


def test_nothing_listening_fails():
    result = warm("http://127.0.0.1:9", spec(timeout=3))  # the discard port: nobody there
    assert result.succeeded == 0 and not result.passed(spec())


# --- as a gate of the rotation, for real ------------------------------------------------------


def edit_spec(spec_path, change) -> None:
    data = yaml.safe_load(spec_path.read_text())
    change(data)
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.slow
def test_after_rotation_every_sitemap_page_is_a_cache_hit(tmp_path_factory):
    spec_path = copy_example(tmp_path_factory, "warm")
    project = Project(spec_path)
    try:
        executor = Executor(project, lock_timeout=60)
        executor.up("production")
        result = executor.rotate("production", role="frontend")
        assert len(result.launched) == PRODUCTION_COUNTS["frontend"]
        warmups = executor.history("production", limit=1)[0]["warmups"]
        assert sorted(w["server"] for w in warmups) == sorted(result.launched)
        assert all(w["passed"] and w["succeeded"] == w["planned"] >= 31 for w in warmups)
        status = executor.status("production")
        lb = next(lb["address"] for lb in status["load_balancers"] if lb["role"] == "frontend")
        sitemap, _ = parse_sitemap(httpx.get(f"http://{lb}/sitemap.xml").content)
        assert len(sitemap) == 31
        # every page on every new server, each at its own address: each one's first answer is a hit
        new = {s["id"]: s["address"] for s in status["servers"] if s["id"] in result.launched and s["in_service"]}
        assert sorted(new) == sorted(result.launched)
        caches = {}
        for server, address in new.items():
            with httpx.Client(base_url=f"http://{address}") as client:
                caches.update({(server, httpx.URL(url).path): client.get(httpx.URL(url).path).headers["X-Cache"] for url in sitemap})
        assert len(caches) == 31 * len(new)
        assert {key: value for key, value in caches.items() if value != "HIT"} == {}
    finally:
        project.close()
        destroy_quietly(spec_path, "production")


@pytest.mark.slow
def test_a_build_that_serves_errors_never_enters_service(tmp_path_factory):
    spec_path = copy_example(tmp_path_factory, "warmfail")
    project = Project(spec_path)
    try:
        executor = Executor(project, lock_timeout=60)
        executor.up("ci")
        before = {s["id"]: s for s in executor.status("ci")["servers"]}
        edit_spec(spec_path, lambda d: d["environments"]["ci"]["roles"].update(frontend={"count": 1, "env": {"PAGE_ERRORS": "1"}}))
        broken = Project(spec_path)
        try:
            with pytest.raises(GateFailed) as raised:
                Executor(broken, lock_timeout=60).deploy("ci")
            history = Executor(broken).history("ci", limit=1)[0]
        finally:
            broken.close()
        assert raised.value.gate == "warm-up" and raised.value.server_id not in before
        assert "HTTP 500" in str(raised.value)
        assert history["status"] == "failed" and "swap" not in history["phases"]
        assert [(w["server"], w["passed"]) for w in history["warmups"]] == [(raised.value.server_id, False)]
        after = executor.status("ci")
        assert {s["id"] for s in after["servers"]} == set(before) and len(before) == sum(CI_COUNTS.values())
        frontend_lb = next(row for row in project.store.load_balancers("ci") if row.role == "frontend")
        members = executor.lbs.members(frontend_lb.handle_data)
        assert set(members) == {sid for sid, s in before.items() if s["role"] == "frontend"}
        assert project.store.server(raised.value.server_id).state == "destroyed"
    finally:
        project.close()
        destroy_quietly(spec_path, "ci")
