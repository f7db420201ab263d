"""The charts, drawn on the server as inline SVG: no script, no network, so the same markup
serves the live dashboard and the self-contained report.

Every text that comes from the store (server ids, phases, release names) goes through
`escape`; numbers are formatted here. Each function returns one `<svg>` element (a string,
marked safe by the caller), or "" when there is nothing to draw."""

from __future__ import annotations

from html import escape

from ..engine.operation import PHASES

# One colour per phase, in PHASES' order; phases not known here take the last.
PHASE_COLOURS = (
    "#8c6bb1", "#3182bd", "#9e9ac8", "#6baed6", "#31a354", "#74c476", "#fdae6b", "#e6550d", "#fd8d3c", "#969696", "#636363", "#bdbdbd",
)
LABEL_WIDTH = 150
PLOT_WIDTH = 560
ROW_HEIGHT = 18


def phase_colour(phase: str) -> str:
    return PHASE_COLOURS[PHASES.index(phase)] if phase in PHASES else PHASE_COLOURS[-1]


def duration(seconds: float | None) -> str:
    """0.25s, 4.2s, 42s, 3m 12s, 2h 05m, 4d 03h: short enough for a table cell or a bar's label."""
    if seconds is None:
        return "-"
    if seconds < 10:  # a phase of a fast provider: tenths and hundredths matter
        return f"{max(seconds, 0):.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">' + "".join(body) + "</svg>"
    )


def _axis(top: int, bottom: int, scale_max: float, unit_label: str) -> list[str]:
    """Vertical grid lines with their labels along the x axis (seconds)."""
    parts = []
    for n in range(5):
        value = scale_max * n / 4
        x = LABEL_WIDTH + PLOT_WIDTH * n / 4
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="grid"/>')
        parts.append(f'<text x="{x:.1f}" y="{bottom + 12}" class="tick" text-anchor="middle">{escape(duration(value))}</text>')
    parts.append(f'<text x="{LABEL_WIDTH + PLOT_WIDTH}" y="{bottom + 26}" class="tick" text-anchor="end">{escape(unit_label)}</text>')
    return parts


def phase_timeline(rows: list[dict]) -> str:
    """One operation's phases, a line per server: bars from each phase's start to its end,
    in seconds from the operation's start (failed phases outlined in red)."""
    if not rows:
        return ""
    servers = list(dict.fromkeys(row["server"] for row in rows))
    end = max(row["start_s"] + row["seconds"] for row in rows) or 1.0
    top, bottom = 4, 4 + ROW_HEIGHT * len(servers)
    body = _axis(top, bottom, end, "seconds from the start of the operation")
    for n, server in enumerate(servers):
        y = top + n * ROW_HEIGHT
        body.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" class="label" text-anchor="end">{escape(server)}</text>')
    for row in rows:
        y = top + servers.index(row["server"]) * ROW_HEIGHT + 3
        x = LABEL_WIDTH + PLOT_WIDTH * max(row["start_s"], 0) / end
        width = max(PLOT_WIDTH * row["seconds"] / end, 1.5)
        outline = "" if row["ok"] else ' stroke="#d62728" stroke-width="2"'
        tip = f"{row['server']}: {row['phase']} {row['seconds']:.2f}s from {row['start_s']:.2f}s" + ("" if row["ok"] else " (failed)")
        body.append(
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW_HEIGHT - 6}" fill="{phase_colour(row["phase"])}"{outline}>'
            f"<title>{escape(tip)}</title></rect>"
        )
    body += _legend(list(dict.fromkeys(row["phase"] for row in rows)), bottom + 34)
    return _svg(LABEL_WIDTH + PLOT_WIDTH + 20, bottom + 52, "phases per server", body)


def _legend(phases: list[str], y: int) -> list[str]:
    parts, x = [], LABEL_WIDTH
    for phase in phases:
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{phase_colour(phase)}"/>')
        parts.append(f'<text x="{x + 14}" y="{y + 9}" class="tick">{escape(phase)}</text>')
        x += 20 + 7 * len(phase)
    return parts


def time_to_live_chart(releases: list[dict]) -> str:
    """Time to live per release (oldest on the left): from its build's bake to the last
    server serving it; releases without one (a rollback, a promotion of an old bake) are
    left out."""
    measured = [r for r in reversed(releases) if r.get("time_to_live_s") is not None]
    if not measured:
        return ""
    height, bar_area = 190, 150
    top = max(r["time_to_live_s"] for r in measured) or 1.0
    step = min(48, (LABEL_WIDTH + PLOT_WIDTH - 60) / len(measured))
    body = [f'<line x1="50" y1="{bar_area + 10}" x2="{50 + step * len(measured)}" y2="{bar_area + 10}" class="grid"/>']
    for fraction in (0.5, 1.0):
        y = 10 + bar_area * (1 - fraction)
        body.append(f'<text x="46" y="{y + 4:.1f}" class="tick" text-anchor="end">{escape(duration(top * fraction))}</text>')
        body.append(f'<line x1="50" y1="{y:.1f}" x2="{50 + step * len(measured)}" y2="{y:.1f}" class="grid"/>')
    for n, release in enumerate(measured):
        value = release["time_to_live_s"]
        bar = bar_area * value / top
        x = 50 + n * step + step * 0.15
        tip = f"{release['operation_id']} ({release['kind']}, {release['created_at']}): {value:.2f}s to live"
        body.append(
            f'<rect x="{x:.1f}" y="{10 + bar_area - bar:.1f}" width="{step * 0.7:.1f}" height="{max(bar, 1):.1f}" class="ttl">'
            f"<title>{escape(tip)}</title></rect>"
        )
        body.append(f'<text x="{x + step * 0.35:.1f}" y="{bar_area + 24}" class="tick" text-anchor="middle">{n + 1}</text>')
    body.append(f'<text x="50" y="{height - 4}" class="tick">releases, oldest first (hover a bar for its operation)</text>')
    return _svg(max(360, int(70 + step * len(measured))), height, "time to live per release", body)


def ages_chart(servers: list[dict]) -> str:
    """Each server's age against its role's max_age (the marker); red past it."""
    if not servers:
        return ""
    top_value = max([s["age_s"] for s in servers] + [s["max_age_s"] or 0 for s in servers]) or 1.0
    top, bottom = 4, 4 + ROW_HEIGHT * len(servers)
    body = _axis(top, bottom, top_value, "age (the marker: max_age)")
    for n, server in enumerate(servers):
        y = top + n * ROW_HEIGHT
        width = max(PLOT_WIDTH * server["age_s"] / top_value, 1.5)
        over = server["max_age_s"] is not None and server["age_s"] > server["max_age_s"]
        tip = f"{server['id']} ({server['role']}): {duration(server['age_s'])}" + (
            f" of max_age {duration(server['max_age_s'])}" if server["max_age_s"] else ", no max_age"
        )
        body.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" class="label" text-anchor="end">{escape(server["id"])}</text>')
        body.append(
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{width:.1f}" height="{ROW_HEIGHT - 6}" class="{"over" if over else "age"}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        if server["max_age_s"]:
            x = LABEL_WIDTH + PLOT_WIDTH * server["max_age_s"] / top_value
            body.append(f'<line x1="{x:.1f}" y1="{y + 1}" x2="{x:.1f}" y2="{y + ROW_HEIGHT - 1}" class="limit"/>')
    return _svg(LABEL_WIDTH + PLOT_WIDTH + 20, bottom + 32, "server ages against max_age", body)
