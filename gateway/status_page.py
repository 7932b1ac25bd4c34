"""`GET /status`: the fleet as a small HTML page that refreshes itself from `/api/status`.

Rendered on the server (so it reads without JavaScript, and a meta refresh keeps it live); with
JavaScript, a few lines swap in freshly rendered rows from `/status/fragment` every two
seconds. The rows are rendered in this module only.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any


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
        rows.append(f'<tr class="model"><th colspan="8">{escape(model["display_name"])} '
                    f'<code>{escape(model["key"])}</code> <span class="state {escape(model["status"])}">'
                    f'{escape(model["status"])}</span> {model["ready_instances"]}/{model["instances_total"]} ready'
                    f'</th></tr>')
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

_STYLE = """
body{font:14px system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;width:100%}
td,th{padding:.35rem .6rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
tr.model th{background:#f4f4f4;padding-top:.8rem}small{color:#666}.none{color:#999}
.state{padding:0 .4rem;border-radius:.3rem;color:#fff;background:#999}.ready,.online{background:#2a2}
.loading{background:#c90}.draining{background:#e70}.unhealthy,.offline{background:#c33}.gone{background:#777}
"""


def _summary(snapshot: dict[str, Any]) -> str:
    return f"{snapshot['models_online']}/{snapshot['models_total']} models online"


def render_status_fragment(snapshot: dict[str, Any]) -> dict[str, str]:
    """What the page's script swaps in: the summary line (text) and the table's rows (HTML)."""
    return {"summary": _summary(snapshot), "rows": _rows(snapshot)}


def render_status_page(snapshot: dict[str, Any]) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fleet status · Serverless LLM Arena</title><style>{_STYLE}</style></head>
<body><h1>Fleet status</h1>
<p><span id="summary">{escape(_summary(snapshot))}</span>
· updated <span id="updated">now</span> · <a href="/api/status">JSON</a> · <a href="/metrics">metrics</a></p>
<table><thead><tr><th>instance</th><th>state</th><th>last probe</th><th>active</th><th>queued</th>
<th>outstanding</th><th>tokens/s</th><th>uptime</th></tr></thead>
<tbody id="rows">{_rows(snapshot)}</tbody></table>
<script>{_SCRIPT}</script></body></html>"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# The page's own script and style, by hash: nothing else runs or applies on it.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
