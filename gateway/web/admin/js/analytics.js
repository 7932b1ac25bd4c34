// Request analytics (per model or instance, by minute or hour) and the arena's battles and
// votes per day, as Chart.js charts (window.Chart, the arena's vendored build).
import { $, api, AuthError, h, initAdmin } from "./common.js";

const PALETTE = ["#4f46e5", "#0e9f6e", "#e3a008", "#e02424", "#0694a2", "#9061f9", "#ff5a1f", "#6b7280"];
const charts = {};
let last = null;

function themeColors() {
  const style = getComputedStyle(document.body);
  return { text: style.color, grid: getComputedStyle(document.querySelector(".card")).borderTopColor };
}

function label(period, step) {
  const d = new Date(period * 1000);
  return step >= 86400 ? d.toLocaleDateString() : step >= 3600
    ? d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit" })
    : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function draw(id, type, labels, datasets, yTitle) {
  if (!window.Chart) return;
  const { text, grid } = themeColors();
  if (charts[id]) charts[id].destroy();
  datasets.forEach((d, i) => { d.borderColor = d.backgroundColor = PALETTE[i % PALETTE.length]; });
  charts[id] = new window.Chart($(id), {
    type, data: { labels, datasets },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false, spanGaps: true,
      color: text,
      plugins: { legend: { labels: { color: text } } },
      scales: {
        x: { ticks: { color: text, maxTicksLimit: 12 }, grid: { color: grid } },
        y: { beginAtZero: true, ticks: { color: text }, grid: { color: grid }, title: { display: !!yTitle, text: yTitle, color: text } },
      },
    },
  });
}

function lines(series, field, suffix = "", dash = []) {
  return Object.entries(series).map(([name, points], i) => ({
    label: `${name}${suffix}`, data: points.map((p) => (p ? p[field] : null)),
    borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length], borderDash: dash,
    pointRadius: 2, tension: 0.2,
  }));
}

function zeroFilled(series, field, suffix = "", dash = []) {
  return lines(series, field, suffix, dash).map((d) => ({ ...d, data: d.data.map((v) => v ?? 0) }));
}

function render() {
  if (!last) return;
  const { data, arena } = last;
  const labels = data.periods.map((p) => label(p, data.step_seconds));
  draw("chart-requests", "line", labels, [...zeroFilled(data.series, "requests"), ...zeroFilled(data.series, "errors", " errors", [6, 4])], "per period");
  draw("chart-tokens", "line", labels, [...zeroFilled(data.series, "prompt_tokens", " in"), ...zeroFilled(data.series, "completion_tokens", " out", [6, 4])], "tokens");
  draw("chart-speed", "line", labels, lines(data.series, "tokens_per_second"), "tokens/s");
  draw("chart-latency", "line", labels, [...lines(data.series, "ttft_ms", " TTFT"), ...lines(data.series, "queue_ms", " queue", [6, 4])], "ms");
  draw("chart-arena", "bar", arena.days.map((d) => label(d, 86400)), [
    { label: "battles", data: arena.battles, backgroundColor: PALETTE[0] },
    { label: "votes", data: arena.votes, backgroundColor: PALETTE[1] },
  ], "per day");
  const fmt = (v) => (v === null || v === undefined ? "–" : String(v));
  $("totals").tBodies[0].replaceChildren(...Object.entries(data.totals).map(([name, t]) => h("tr", { "data-series": name },
    h("td", { text: name }), ...["requests", "errors", "prompt_tokens", "completion_tokens", "tokens_per_second", "ttft_ms", "queue_ms"]
      .map((f) => h("td", { text: fmt(t[f]) })))));
  if (!Object.keys(data.totals).length) $("totals").tBodies[0].append(h("tr", {}, h("td", { colspan: "8", text: "No requests in this range." })));
  document.body.dataset.chartsReady = String(Date.now());
}

async function load() {
  const [resolution, hours] = $("range").value.split(":");
  $("analytics-error").hidden = true;
  try {
    const [data, arena] = await Promise.all([
      api(`/api/admin/analytics?resolution=${resolution}&hours=${hours}&by=${$("by").value}`),
      api("/api/admin/analytics/arena?days=14"),
    ]);
    last = { data, arena };
    render();
  } catch (e) {
    if (e instanceof AuthError) return;
    $("analytics-error").textContent = e.message;
    $("analytics-error").hidden = false;
  }
}

if (!window.Chart) {
  $("analytics-error").textContent = "Charts need the Chart.js library, which is missing from this install (make install).";
  $("analytics-error").hidden = false;
}
$("range").addEventListener("change", load);
$("by").addEventListener("change", load);
$("refresh").addEventListener("click", load);
// Redraw in the theme's colours when the toggle or the system changes it.
new MutationObserver(render).observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", render);
// Refreshed every 15 s while logged in: stopped on logout or a refused key (no "Bearer null" polling).
let timer = null;
const stopRefresh = () => { clearInterval(timer); timer = null; };
const startRefresh = () => { stopRefresh(); load(); timer = setInterval(load, 15000); };
window.addEventListener("admin-logout", stopRefresh);
initAdmin(startRefresh);
