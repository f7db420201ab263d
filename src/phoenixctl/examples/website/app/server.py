"""Example website served by Phoenix: one aiohttp program, three roles.

Started as `python app/server.py` from the server's root (which holds VERSION).
Everything else comes from the environment: PHOENIX_ROLE (frontend|backend|edit),
PHOENIX_ADDRESS, PHOENIX_PORT, PHOENIX_ENV, PHOENIX_SERVER_ID, PHOENIX_LB_BACKEND,
PHOENIX_PERSISTENT_CONTENT, HEALTH_FAIL, PAGE_ERRORS, FAIL_AFTER_REQUESTS, PAGES and
RENDER_DELAY_MS.

HTTPS is optional: when TLS_CERT_FILE and TLS_KEY_FILE (PEM paths, relative to the
server root or absolute) are set, the same app also listens with TLS on
PHOENIX_ADDRESS:TLS_PORT; plain HTTP on PHOENIX_PORT stays (health checks use it).
"""

import asyncio
import html
import os
import re
import signal
import ssl
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientError, ClientSession, ClientTimeout, web

ROLES = ("frontend", "backend", "edit")
NAME_RE = re.compile(r"[a-z0-9-]{1,64}")
CSS = "body{font-family:sans-serif;max-width:40em;margin:2em auto}footer{color:#777}\n"

ROLE = os.environ.get("PHOENIX_ROLE", "")
SERVER_ID = os.environ.get("PHOENIX_SERVER_ID", "unknown")
ENV = os.environ.get("PHOENIX_ENV", "")
LB_BACKEND = os.environ.get("PHOENIX_LB_BACKEND", "")
PAGES = max(1, int(os.environ.get("PAGES", "30")))
PAGE_ERRORS = os.environ.get("PAGE_ERRORS") == "1"
FAIL_AFTER = int(os.environ.get("FAIL_AFTER_REQUESTS", "0"))  # 0: never
RENDER_DELAY = int(os.environ.get("RENDER_DELAY_MS", "50")) / 1000
CONTENT_DIR = Path(os.environ.get("PHOENIX_PERSISTENT_CONTENT", "content"))
VERSION = ""  # read once in main(), after the role is known to be valid

SESSION = web.AppKey("session", ClientSession)
CACHE = web.AppKey("cache", dict)
LOCKS = web.AppKey("locks", dict)
SERVED = web.AppKey("served", list)  # [page requests served so far]


@web.middleware
async def identify(request, handler):
    # Every answer, errors included, tells which server and build produced it,
    # and whether the request reached this process over TLS (proves passthrough).
    ids = {"X-Server": SERVER_ID, "X-Version": VERSION, "X-TLS": "on" if request.secure else "off"}
    started, status = time.monotonic(), 500
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        exc.headers.update(ids)
        status = exc.status
        raise
    finally:
        access_line(request, status, time.monotonic() - started)
    response.headers.update(ids)
    return response


def access_line(request, status, seconds):
    """One line per request, written whole at once (a killed server loses no finished line):
    what Phoenix ships to the log aggregator."""
    path = request.path_qs.replace("\n", "%0A")  # one request, one line
    sys.stdout.write(f"access {request.method} {path} {status} {seconds * 1000:.1f}ms\n")
    sys.stdout.flush()


async def healthz(request):
    failing = os.environ.get("HEALTH_FAIL") == "1"
    body = {"status": "fail" if failing else "ok", "role": ROLE,
            "version": VERSION, "server": SERVER_ID, "env": ENV}
    return web.json_response(body, status=500 if failing else 200)


async def version(request):
    return web.Response(text=VERSION)


def article_name(request):
    name = request.match_info["name"]
    if not NAME_RE.fullmatch(name):
        raise web.HTTPBadRequest(text="article names are [a-z0-9-]{1,64}\n")
    return name


# ---------------------------------------------------------------- frontend

def links_of(n):
    """Previous, next and 3 pseudo-random but stable neighbours of page n (home is always linked)."""
    targets = [(n - 1) % PAGES, (n + 1) % PAGES] + [(n * k + 3) % PAGES for k in (7, 13, 31)]
    return list(dict.fromkeys(t for t in targets if t != n))


def render(title, links, articles):
    items = "".join(f'<li><a href="/page/{k}">Page {k}</a></li>' for k in links)
    if articles is None:
        news = "<p><em>articles unavailable</em></p>"
    else:
        news = "<ul>" + "".join(f"<li>{html.escape(a['title'])}</li>" for a in articles) + "</ul>"
    return (f'<!doctype html><html><head><title>{title}</title>'
            f'<link rel="stylesheet" href="/static/site.css"></head><body>'
            f'<h1>{title}</h1><p><a href="/">Home</a></p><ul>{items}</ul>'
            f'<h2>Articles</h2>{news}<footer>version {html.escape(VERSION)} '
            f'served by {html.escape(SERVER_ID)}</footer></body></html>\n')


async def fetch_articles(app):
    """Article list from the backend, or None if it cannot be had right now."""
    if not LB_BACKEND:
        return None
    try:
        async with app[SESSION].get(f"http://{LB_BACKEND}/api/articles") as resp:
            resp.raise_for_status()
            return (await resp.json())["articles"]
    except (ClientError, asyncio.TimeoutError, ValueError, KeyError):
        return None


async def page(request):
    if PAGE_ERRORS:  # a broken build whose health check still passes
        raise web.HTTPInternalServerError(text="page rendering is broken in this build")
    request.app[SERVED][0] += 1
    if FAIL_AFTER and request.app[SERVED][0] > FAIL_AFTER:  # breaks under load, after warm-up passed
        raise web.HTTPInternalServerError(text="this build falls over under load")
    if "n" in request.match_info:
        n = int(request.match_info["n"])
        if n >= PAGES:
            raise web.HTTPNotFound()
        title, links = f"Page {n}", links_of(n)
    else:
        title, links = "Home", range(PAGES)
    path, cache = request.path, request.app[CACHE]
    if path in cache:
        return html_page(cache[path], "HIT")
    # One lock per path: concurrent misses wait for a single render.
    async with request.app[LOCKS].setdefault(path, asyncio.Lock()):
        if path in cache:  # rendered by the request we were waiting for
            return html_page(cache[path], "HIT")
        articles = await fetch_articles(request.app)
        await asyncio.sleep(RENDER_DELAY)  # uncached renders are slow
        body = render(title, links, articles)
        if articles is not None:  # never cache a degraded page
            cache[path] = body
    return html_page(body, "MISS")


def html_page(body, cache_status):
    return web.Response(text=body, content_type="text/html", headers={"X-Cache": cache_status})


async def css(request):
    return web.Response(text=CSS, content_type="text/css")


async def sitemap(request):
    base = f"{request.scheme}://{request.host}"
    paths = ["/"] + [f"/page/{n}" for n in range(PAGES)]
    urls = "".join(f"<url><loc>{html.escape(base + p)}</loc></url>" for p in paths)
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>\n')
    return web.Response(text=body, content_type="application/xml")


async def backend_session(app):
    # One client session for the whole life of the server: keeps connections alive.
    async with ClientSession(timeout=ClientTimeout(total=5)) as session:
        app[SESSION] = session
        yield


# ---------------------------------------------------------------- backend

def read_articles():
    articles = []
    for path in sorted(CONTENT_DIR.glob("*.txt")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        articles.append({"name": path.stem, "title": lines[0] if lines else ""})
    return articles


async def list_articles(request):
    # File reads go to a thread so a slow disk does not stall the event loop.
    articles = await asyncio.to_thread(read_articles)
    return web.json_response({"articles": articles, "version": VERSION})


async def get_article(request):
    name = article_name(request)
    try:
        body = await asyncio.to_thread((CONTENT_DIR / f"{name}.txt").read_text, encoding="utf-8")
    except FileNotFoundError:
        raise web.HTTPNotFound(text=f"no article {name}\n")
    return web.json_response({"name": name, "body": body})


# ---------------------------------------------------------------- edit

FORM = """<!doctype html><html><head><title>Edit</title></head><body><h1>Edit an article</h1>
<form method="post" onsubmit="this.action='/api/articles/'+this.elements.article.value">
<p><input name="article" pattern="[a-z0-9-]{1,64}" placeholder="name" required></p>
<p><textarea name="body" rows="12" cols="60"></textarea></p><p><button>Save</button></p>
</form></body></html>
"""


async def edit_form(request):
    return web.Response(text=FORM, content_type="text/html")


def write_atomically(path, text):
    # Readers see the old file or the new one, never a half-written one.
    # The temp name does not end in .txt so the backend never lists it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; articles are public
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


async def put_article(request):
    name = article_name(request)
    text = await request.text()
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()  # the HTML form sends its textarea as "body"
        text = form.get("body", text)
    await asyncio.to_thread(write_atomically, CONTENT_DIR / f"{name}.txt", text)
    return web.json_response({"name": name, "bytes": len(text.encode()), "server": SERVER_ID},
                             status=201)


# ---------------------------------------------------------------- main

def make_app():
    app = web.Application(middlewares=[identify])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/version", version)
    if ROLE == "frontend":
        app[CACHE], app[LOCKS], app[SERVED] = {}, {}, [0]
        app.cleanup_ctx.append(backend_session)
        app.router.add_get("/", page)
        app.router.add_get(r"/page/{n:\d+}", page)
        app.router.add_get("/static/site.css", css)
        app.router.add_get("/sitemap.xml", sitemap)
    elif ROLE == "backend":
        app.router.add_get("/api/articles", list_articles)
        app.router.add_get("/api/articles/{name}", get_article)
    else:  # edit
        app.router.add_get("/", edit_form)
        app.router.add_put("/api/articles/{name}", put_article)
        app.router.add_post("/api/articles/{name}", put_article)
    return app


def fail(message):
    """Configuration error: one line on stderr, exit status 2."""
    print(f"server.py: {message}", file=sys.stderr)
    sys.exit(2)


def _encrypted_key(*_):
    raise ValueError("passphrase-protected key")


def tls_config():
    """(ssl_context, port) from TLS_CERT_FILE, TLS_KEY_FILE and TLS_PORT, or None if TLS is off.

    Error messages name the variable and the path, never what the files contain.
    """
    cert, key = os.environ.get("TLS_CERT_FILE", ""), os.environ.get("TLS_KEY_FILE", "")
    if not cert and not key:
        return None
    if not (cert and key):
        missing = "TLS_KEY_FILE" if cert else "TLS_CERT_FILE"
        fail(f"TLS_CERT_FILE and TLS_KEY_FILE must be set together ({missing} is not set)")
    # TLS_PORT, or the tls_port Phoenix announces for the role
    raw_port = os.environ.get("TLS_PORT") or os.environ.get("PHOENIX_TLS_PORT", "")
    if not raw_port:
        fail("TLS_PORT must be set when TLS_CERT_FILE and TLS_KEY_FILE are set")
    try:
        port = int(raw_port)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        fail(f"TLS_PORT must be a port number (got {raw_port!r})")
    for var, path in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            fail(f"cannot read {var}={path}: {exc.strerror or type(exc).__name__}")
    try:  # parse the certificate alone first, so an error can say which file is wrong
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except (ssl.SSLError, ValueError):
        fail(f"TLS_CERT_FILE={cert} holds no valid PEM certificate")
    except OSError as exc:
        fail(f"cannot read TLS_CERT_FILE={cert}: {exc.strerror or type(exc).__name__}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # A passphrase callback that refuses: OpenSSL would otherwise prompt on the tty.
        context.load_cert_chain(cert, key, password=_encrypted_key)
    except ssl.SSLError as exc:
        # Only our own words or OpenSSL's short reason code: never file data.
        problem = ("does not match the certificate in TLS_CERT_FILE"
                   if exc.reason == "KEY_VALUES_MISMATCH" else "holds no valid PEM private key")
        fail(f"TLS_KEY_FILE={key} {problem}")
    except ValueError:  # raised by _encrypted_key
        fail(f"TLS_KEY_FILE={key} is passphrase-protected, which is not supported")
    except OSError as exc:
        fail(f"cannot load TLS_CERT_FILE={cert} / TLS_KEY_FILE={key}: "
             f"{exc.strerror or type(exc).__name__}")
    return context, port


async def serve(app, host, port, tls):
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        sites = [web.TCPSite(runner, host, port)]
        listening = f"{host}:{port}"
        if tls:
            context, tls_port = tls
            # TLS first: once plain HTTP (the health check) answers, HTTPS is up too.
            sites.insert(0, web.TCPSite(runner, host, tls_port, ssl_context=context))
            listening += f" (https {host}:{tls_port})"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        for site in sites:
            await site.start()
        print(f"{SERVER_ID} {ROLE} {VERSION} listening on {listening}", flush=True)
        await stop.wait()
    finally:
        # Graceful shutdown: stop accepting on every listener, let in-flight
        # requests finish (up to 5 s), run the app's cleanup, then exit 0.
        await runner.cleanup()


def main():
    global VERSION
    if ROLE not in ROLES:
        fail(f"PHOENIX_ROLE must be one of {', '.join(ROLES)} (got {ROLE!r})")
    VERSION = Path("VERSION").read_text().strip()
    if ROLE in ("backend", "edit"):
        CONTENT_DIR.mkdir(parents=True, exist_ok=True)
    host = os.environ.get("PHOENIX_ADDRESS", "127.0.0.1")
    port = int(os.environ.get("PHOENIX_PORT", "8080"))
    tls = tls_config()
    asyncio.run(serve(make_app(), host, port, tls))


if __name__ == "__main__":
    main()
