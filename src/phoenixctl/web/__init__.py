"""The dashboard (`phoenix dashboard`) and the static report (`phoenix report --html`).

`views.py` gathers what a page shows from the read-only reports and the store (bounded
queries: the latest rows per environment, never the whole history); `charts.py` draws the
charts as inline SVG (no network, no script); `pages.py` renders the pages from the
autoescaping templates in `templates/`; `app.py` serves them with aiohttp, with the same
data as JSON under /api/, live updates as server-sent events, and the token check;
`access.py` decides who may reach it (loopback, the token), before anything heavy loads.

Nothing here loads at `phoenix --help`: the commands import it in their bodies."""
