"""The dashboard's web application (aiohttp): read-only pages, the same data as JSON under
/api/ (in the shapes of the commands' --json), and live updates as server-sent events.

The store and the drivers are synchronous: every read runs on one worker thread, in turn,
so the event loop never blocks and the store's single connection is never shared at once.

Access: on loopback without a token, only requests naming a loopback host are answered (a
web page elsewhere cannot reach it by rebinding a name to 127.0.0.1). With a token (required
to listen beyond loopback), every request presents it: `Authorization: Bearer T`, or
`?token=T` in a browser's address, which then sets a cookie for the page's own requests."""

from __future__ import annotations

import asyncio
import hmac
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from importlib.resources import files
from typing import Callable

from aiohttp import web

from ..errors import PhoenixError, SpecError
from .access import is_loopback
from .pages import render_environment, render_overview
from .views import Dashboard

TOKEN_COOKIE = "phoenix_dashboard_token"
EVENTS_INTERVAL = 1.0  # seconds between two versions sent to a page
EVENTS_LIFETIME = 300.0  # a stream ends then (bounded); the browser's EventSource reconnects
HEADERS = {
    # the pages' own script and requests only; styles are inline; the token never leaves in a Referer
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class DashboardApp:
    """The routes of one project's dashboard."""

    def __init__(self, dashboard: Dashboard, token: str | None = None):
        self.dashboard = dashboard
        self.token = token
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phoenix-dashboard")

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self.guard])
        app.router.add_get("/", self.overview_page)
        app.router.add_get("/environments/{env}", self.environment_page)
        app.router.add_get("/events", self.events)
        app.router.add_get("/static/live.js", self.script)
        app.router.add_get("/favicon.ico", self.no_icon)
        app.router.add_get("/api/environments", self.api_overview)
        app.router.add_get("/api/environments/{env}", self.api_environment)
        app.router.add_get("/api/environments/{env}/status", self.api_status)
        app.router.add_get("/api/environments/{env}/history", self.api_history)
        app.router.add_get("/api/environments/{env}/drift", self.api_drift)
        app.on_cleanup.append(self._stop_worker)
        return app

    async def _stop_worker(self, _app: web.Application) -> None:
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def read(self, function: Callable, *args):
        """`function(*args)` on the worker thread; an unknown environment is a 404, any other
        failure to read (a provider that does not answer) a 503 saying why, in one line."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)
        except SpecError as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None
        except PhoenixError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc}\n") from None

    # --- access -----------------------------------------------------------------------------
    @web.middleware
    async def guard(self, request: web.Request, handler) -> web.StreamResponse:
        from_query = False
        if self.token is None:
            if not is_loopback(request.url.host or ""):
                return web.Response(status=403, text="the dashboard answers only requests to a loopback address\n", headers=HEADERS)
        else:
            presented, from_query = self.presented(request)
            if presented is None or not hmac.compare_digest(presented.encode(), self.token.encode()):
                return web.Response(
                    status=401, text="401: this dashboard needs its token (Authorization: Bearer, or ?token=)\n",
                    headers={**HEADERS, "WWW-Authenticate": 'Bearer realm="phoenix dashboard"'},
                )
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(HEADERS)
            raise
        response.headers.update(HEADERS)
        if from_query:  # the page's script, stylesheet-free links and event stream then carry it as a cookie
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response

    @staticmethod
    def presented(request: web.Request) -> tuple[str | None, bool]:
        """The token a request presents, and whether it came in the address (?token=)."""
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            return authorization[len("Bearer "):].strip(), False
        if "token" in request.query:
            return request.query["token"], True
        return request.cookies.get(TOKEN_COOKIE), False

    # --- pages --------------------------------------------------------------------------------
    async def overview_page(self, request: web.Request) -> web.Response:
        def render() -> str:
            return render_overview(self.dashboard.overview(), live=True, version=self.dashboard.version(None))

        return web.Response(text=await self.read(render), content_type="text/html")

    async def environment_page(self, request: web.Request) -> web.Response:
        env, since = request.match_info["env"], self.since(request)

        def render() -> str:
            page = self.dashboard.environment(env, since)
            return render_environment(page, self.dashboard.spec.project, live=True, version=self.dashboard.version(env))

        return web.Response(text=await self.read(render), content_type="text/html")

    @staticmethod
    def since(request: web.Request) -> timedelta | None:
        if "since" not in request.query:
            return None
        from ..spec.values import parse_duration

        try:
            return timedelta(seconds=parse_duration(request.query["since"]))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"since: {exc}\n") from None

    async def script(self, request: web.Request) -> web.Response:
        text = files("phoenixctl.web").joinpath("static", "live.js").read_text()
        return web.Response(text=text, content_type="application/javascript")

    async def no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)  # asked for by every browser; a 404 would be a console error

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The page's version every EVENTS_INTERVAL seconds (the page fetches itself again
        when it changes), for at most EVENTS_LIFETIME seconds."""
        env = request.query.get("env")
        if env is not None:
            await self.read(self.dashboard.check, env)
        response = web.StreamResponse(headers={**HEADERS, "Content-Type": "text/event-stream"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        ends = loop.time() + EVENTS_LIFETIME
        try:
            await response.write(b"retry: 2000\n\n")
            while loop.time() < ends:
                version = await self.read(self.dashboard.version, env)
                await response.write(f"event: version\ndata: {version}\n\n".encode())
                await asyncio.sleep(EVENTS_INTERVAL)
        except ConnectionResetError:  # the page went away
            pass
        return response

    # --- the same data as JSON ----------------------------------------------------------------
    async def api_overview(self, request: web.Request) -> web.Response:
        return web.json_response(await self.read(self.dashboard.overview))

    async def api_environment(self, request: web.Request) -> web.Response:
        return web.json_response(await self.read(self.dashboard.environment, request.match_info["env"], self.since(request)))

    async def api_status(self, request: web.Request) -> web.Response:
        """`phoenix status ENV --json`."""
        env = request.match_info["env"]
        return web.json_response(await self.read(lambda: self.dashboard.executor.reports.status(env).as_json()))

    async def api_history(self, request: web.Request) -> web.Response:
        """`phoenix history ENV --json [--limit N]` (N at most 500)."""
        env = request.match_info["env"]
        try:
            limit = min(max(int(request.query.get("limit", "20")), 1), 500)
        except ValueError:
            raise web.HTTPBadRequest(text="limit: expected a whole number\n") from None
        return web.json_response(await self.read(lambda: [op.as_json() for op in self.dashboard.executor.reports.history(env, limit)]))

    async def api_drift(self, request: web.Request) -> web.Response:
        """`phoenix drift ENV --json` (at most the dashboard's drift_ttl old)."""
        return web.json_response(await self.read(self.dashboard.drift, request.match_info["env"]))


async def serve(app: web.Application, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Listen until SIGINT or SIGTERM; `ready` gets the address bound (port 0: a free one)."""
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise PhoenixError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound_host, bound_port = runner.addresses[0][:2]
        ready(f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}/")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
