"""The HTML of the run pages, server-rendered from `bot.core.runs` data: every value a user or a
workload wrote goes through `h` (html.escape, quotes too) or `href` (an http(s) URL checked by
`text.safe_url`, else no link). No inline script or style: the page passes a strict CSP.
"""
from __future__ import annotations

import html
from datetime import datetime, timezone
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import quote, urlencode

from bot.core import runs
from bot.core.text import safe_url, timestamp

STATIC = {"run.js": "text/javascript", "run.css": "text/css"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


def template(name: str) -> str:
    return (resources.files("bot") / "templates" / name).read_text(encoding="utf-8")


def h(value: object) -> str:
    return html.escape(str(value), quote=True)


def href(url: object, label: object) -> str:
    safe = safe_url(url)
    return f'<a href="{h(safe)}" rel="noopener noreferrer">{h(label)}</a>' if safe else h(label)


def badge(state: str) -> str:
    return f'<span class="badge {h(state)}">{h(state.replace("_", " "))}</span>'


def when(stamp: str) -> str:
    return h(stamp.replace("T", " ").replace("Z", " UTC")) if stamp else '<span class="muted">—</span>'


def took(start: str, end: str) -> str:
    if not start:
        return "—"
    try:
        stop = timestamp(end) if end else datetime.now(timezone.utc).timestamp()
        seconds = max(0, int(stop - timestamp(start)))
    except ValueError:
        return "—"
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}h " if hours else "") + f"{rest // 60}m {rest % 60}s" + ("" if end else " so far")


def layout(title: str, body: str, who: str, home: str = "") -> str:
    return Template(template("page.html")).substitute(title=h(title), body=body, who=who, home=home)


def who(login: str | None, here: str) -> str:
    if login:
        return (f'Signed in as {h(login)} <form class="logout" method="post" action="/logout">'
                '<button type="submit">Sign out</button></form>')
    return f'<a href="/login?{h(urlencode({"next": here}))}">Sign in with GitHub</a>'


def run_page(run: runs.Run, github: str, metrics: Any, live: bool) -> str:
    """The page of one run: what and why, timings, Kubernetes objects, metrics, logs."""
    title = f"{run.kind} run {run.run_id}"
    parts = [f"<h1>{h(title)} {badge(run.state)}</h1>", facts(run, github), "<h2>Timings</h2>", timings(run),
             "<h2>Kubernetes objects</h2>", objects(run, live), metrics_section(metrics), "<h2>Logs</h2>",
             log_sections(run, live)]
    return "\n".join(p for p in parts if p)


def facts(run: runs.Run, github: str) -> str:
    repo_url = f"{github}/{run.repo}"
    rows = [("Repository", href(repo_url, run.repo)),
            ("Commit", href(f"{repo_url}/commit/{run.sha}", run.sha[:12]) if run.sha else "—"),
            ("Branch", h(run.ref) if run.ref else "—"),
            ("Pull request", href(f"{repo_url}/pull/{run.pr}", f"#{run.pr}") if run.pr.isdigit() else "—"),
            ("Why", h(run.trigger or (f"pull request #{run.pr}" if run.pr else f"push to {run.ref}" if run.ref
                                      else "—"))),
            ("Check", h(run.check_name) if run.check_name else "—"),
            ("Conclusion", badge(run.conclusion) if run.conclusion else "not finished yet"),
            ("All runs", f'<a href="/runs?{h(urlencode({"repo": run.repo}))}">{h(run.repo)}</a>')]
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def timings(run: runs.Run) -> str:
    rows = [("Created", when(run.created)), ("Started", when(run.started)), ("Finished", when(run.finished)),
            ("Duration", h(took(run.started, run.finished)))]
    return '<dl class="facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def objects(run: runs.Run, live: bool) -> str:
    note = "" if live else '<p class="muted">The Jobs are gone from the cluster; this is what the bot kept.</p>'
    rows = []
    for job in run.jobs:
        detail = f'<div class="muted">{h(job.detail)}</div>' if job.detail else ""
        rows.append(f"<tr><td>{h(job.api)} <code>{h(job.name)}</code>{detail}</td><td>{h(job.kind)}</td>"
                    f"<td>{badge(job.state)}</td>"
                    f"<td>{when(job.started)}</td><td>{when(job.finished)}</td><td></td><td></td></tr>")
        for pod in job.pods:
            rows.append(f"<tr><td>&nbsp;&nbsp;Pod <code>{h(pod.name)}</code></td><td>{h(pod.phase)}</td>"
                        f"<td>{h(pod.reason) or '—'}</td><td>{when(pod.started)}</td><td></td>"
                        f"<td>{h(pod.node) or '—'}</td><td>{pod.restarts}</td></tr>")
    head = "<tr><th>Object</th><th>Kind / phase</th><th>State / reason</th><th>Started</th><th>Finished</th>" \
           "<th>Node</th><th>Restarts</th></tr>"
    return note + f"<table>{head}{''.join(rows)}</table>"


def metrics_section(metrics: Any) -> str:
    rows, rounds, links = runs.metric_rows(metrics)
    if not rows and not rounds and not links:
        return ""
    parts = ["<h2>Metrics</h2>"]
    if rows:
        parts.append("<table><tr><th>metric</th><th>value</th></tr>"
                     + "".join(f"<tr><td>{h(k)}</td><td>{h(v)}</td></tr>" for k, v in rows) + "</table>")
    if rounds:
        names = sorted({k for r in rounds for k in r if k != "round"})[:20]
        head = "<tr><th>round</th>" + "".join(f"<th>{h(n)}</th>" for n in names) + "</tr>"
        body = "".join("<tr><td>" + h(r.get("round", "")) + "</td>" + "".join(f"<td>{h(r.get(n, ''))}</td>"
                                                                          for n in names) + "</tr>" for r in rounds)
        parts.append(f"<h3>Per round</h3>{''.join(chart(n, rounds) for n in names[:CHARTS])}<table>{head}{body}</table>")
    if links:
        parts.append("<h3>Links</h3><ul>" + "".join(f"<li>{href(v, k)}</li>" for k, v in links.items()) + "</ul>")
    return "\n".join(parts)


CHARTS = 6  # metrics charted per run at most
CHART_W, CHART_H, PAD = 320, 140, 28


def chart(name: str, rounds: list[dict[str, str]]) -> str:
    """A small inline SVG line chart of one metric over the rounds (no script, nothing fetched)."""
    points = []
    for row in rounds:
        try:
            points.append((float(row.get("round", "")), float(row.get(name, ""))))
        except ValueError:
            continue
    if len(points) < 2:
        return ""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def at(x: float, y: float) -> str:
        px = PAD + (x - x0) / ((x1 - x0) or 1) * (CHART_W - 2 * PAD)
        py = CHART_H - PAD - (y - y0) / ((y1 - y0) or 1) * (CHART_H - 2 * PAD)
        return f"{px:.1f},{py:.1f}"
    line = " ".join(at(x, y) for x, y in points)
    return (f'<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" width="{CHART_W}" height="{CHART_H}" role="img" '
            f'aria-label="{h(name)} per round"><text x="{PAD}" y="16" font-size="12">{h(name)}</text>'
            f'<text x="{PAD}" y="{CHART_H - 8}" font-size="10">round {x0:g}</text>'
            f'<text x="{CHART_W - PAD}" y="{CHART_H - 8}" font-size="10" text-anchor="end">{x1:g}</text>'
            f'<text x="{CHART_W - 4}" y="{PAD}" font-size="10" text-anchor="end">{y1:.4g}</text>'
            f'<text x="{CHART_W - 4}" y="{CHART_H - PAD}" font-size="10" text-anchor="end">{y0:.4g}</text>'
            f'<polyline fill="none" stroke="#0969da" stroke-width="2" points="{line}"/></svg>')


def log_path(run_id: str, pod: str, container: str, what: str) -> str:
    return f"/runs/{quote(run_id)}/pods/{quote(pod)}/containers/{quote(container)}/{what}"


def log_sections(run: runs.Run, live: bool) -> str:
    parts = []
    for job in run.jobs:
        for pod in job.pods:
            for index, container in enumerate(pod.containers):
                ident = f"log-{h(pod.name)}-{index}"
                finished = not live or container.state == "terminated"
                what = f"{'init container' if container.init else 'container'} {container.name} of {pod.name}"
                download = log_path(run.run_id, pod.name, container.name, "log")
                parts.append(
                    f'<h3>{h(what)}<span class="logstate" id="{ident}-state">connecting</span></h3>'
                    f'<p><a href="{h(download)}" download>Download the whole log</a></p>'
                    f'<pre class="log" id="{ident}" data-state="{ident}-state" data-finished="{str(finished).lower()}" '
                    f'data-live="{h(log_path(run.run_id, pod.name, container.name, "live"))}"></pre>')
    return "\n".join(parts) or '<p class="muted">No Pod has started yet.</p>'


def list_page(repo: str, found: list[runs.Run], filters: dict[str, str]) -> str:
    """`/runs?repo=...`: the newest runs first, with the filter form."""
    fields = "".join(f'<label>{h(name)}<input name="{h(name)}" value="{h(filters.get(name, ""))}"></label>'
                     for name in runs.FILTERS)
    form = (f'<form class="filters" method="get" action="/runs"><label>repo<input name="repo" value="{h(repo)}">'
            f'</label>{fields}<button type="submit">Filter</button></form>')
    head = "<tr><th>Run</th><th>Kind</th><th>State</th><th>Branch / PR</th><th>Commit</th><th>Started</th></tr>"
    rows = "".join(
        f'<tr><td><a href="/runs/{h(quote(r.run_id))}">{h(r.run_id)}</a></td><td>{h(r.kind)}</td>'
        f"<td>{badge(r.state)}</td><td>{h(r.ref) or ('#' + h(r.pr) if r.pr else '—')}</td>"
        f"<td><code>{h(r.sha[:7])}</code></td><td>{when(r.started)}</td></tr>" for r in found)
    empty = "" if found else '<p class="muted">No run matches.</p>'
    return f"<h1>Runs of {h(repo)}</h1>{form}<table>{head}{rows}</table>{empty}"


def refused(message: str, title: str = "Not allowed") -> str:
    return f'<h1>{h(title)}</h1><div class="refused"><p>{h(message)}</p></div>'
