"""`GET /status`: the fleet as an HTML page in the arena's look that refreshes itself.

Rendered on the server (so it reads without JavaScript, and a meta refresh keeps it live); with
JavaScript, a few lines swap in freshly rendered rows from `/status/fragment` every two
seconds. The rows are rendered in this module only.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

from gateway.page_shell import render_page


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = f"{value:.1f}"
    return escape(f"{value}{suffix}")


def _uptime(seconds: Any) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _rows(snapshot: dict[str, Any]) -> str:
    rows = []
    for model in snapshot["models"]:
        rows.append(f'<tr class="model"><td colspan="8"><strong>{escape(model["display_name"])}</strong> '
                    f'<code>{escape(model["key"])}</code> <span class="state {escape(model["status"])}">'
                    f'{escape(model["status"])}</span> {model["ready_instances"]}/{model["instances_total"]} ready'
                    f'</td></tr>')
        if not model["instances"]:
            rows.append('<tr><td colspan="8" class="none">no instance</td></tr>')
        for inst in model["instances"]:
            rows.append(
                "<tr>"
                f'<td><code>{escape(inst["instance_id"])}</code>{"<br><small>" + escape(inst["url"]) + "</small>" if inst.get("url") else ""}</td>'
                f'<td><span class="state {escape(inst["state"])}">{escape(inst["state"])}</span>'
                f'{"<br><small>" + escape(inst["last_error"]) + "</small>" if inst["last_error"] else ""}</td>'
                f'<td>{_fmt(inst["last_probe_latency_ms"], " ms")}</td>'
                f'<td>{_fmt(inst["active"])}</td><td>{_fmt(inst["queued"])}</td>'
                f'<td>{_fmt(inst["outstanding"])}</td>'
                f'<td>{_fmt(inst["tokens_per_second"])}</td><td>{_uptime(inst["uptime_seconds"])}</td>'
                "</tr>")
    return "\n".join(rows)


# The rows are rendered here only: the script swaps in the fragment `/status/fragment` serves.
_SCRIPT = """
async function refresh() {
  try {
    const r = await fetch('/status/fragment', {cache: 'no-store'});
    const f = await r.json();
    document.getElementById('rows').innerHTML = f.rows;
    document.getElementById('summary').textContent = f.summary;
    document.getElementById('updated').textContent = new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById('updated').textContent = 'gateway unreachable';
  }
}
document.querySelector('meta[http-equiv=refresh]').remove();
setInterval(refresh, 2000);
"""


def _summary(snapshot: dict[str, Any]) -> str:
    return f"{snapshot['models_online']}/{snapshot['models_total']} models online"


def render_status_fragment(snapshot: dict[str, Any]) -> dict[str, str]:
    """What the page's script swaps in: the summary line (text) and the table's rows (HTML)."""
    return {"summary": _summary(snapshot), "rows": _rows(snapshot)}


def render_status_page(snapshot: dict[str, Any]) -> str:
    """The page, in the arena's look (the server pages' shell: stylesheet, theme, top bar)."""
    main = f"""<h1 class="page-title">Fleet status</h1>
<p class="hint"><span id="summary">{escape(_summary(snapshot))}</span>
· updated <span id="updated">now</span> · <a href="/api/status">JSON</a> · <a href="/metrics">metrics</a></p>
<section class="card" aria-labelledby="instances-title">
<h2 id="instances-title">Instances</h2>
<div class="table-scroll"><table class="data status-table"><thead><tr><th scope="col">Instance</th>
<th scope="col">State</th><th scope="col">Last probe</th><th scope="col">Active</th><th scope="col">Queued</th>
<th scope="col">Outstanding</th><th scope="col">Tokens/s</th><th scope="col">Uptime</th></tr></thead>
<tbody id="rows">{_rows(snapshot)}</tbody></table></div>
</section>"""
    return render_page("Fleet status", "status", main, head='  <meta http-equiv="refresh" content="10">\n',
                       tail=f"<script>{_SCRIPT}</script>\n")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The arena's own files and this page's one inline script (by hash): nothing else runs or applies.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src 'self' {_sha256(_SCRIPT)}; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
