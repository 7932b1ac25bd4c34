// The leaderboard page: ratings with intervals next to speed, per category, with or without
// style control, and four charts (Chart.js, loaded as a classic script: window.Chart).
import { fmt, h } from "./panel.js";
import { errorMessage } from "./stream.js";
import { cssColor, initThemeToggle } from "./theme-toggle.js";

const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(0)}%`);
const charts = {};
let board = null;

function withAlpha(rgb, alpha) {
  const m = rgb.match(/\d+(\.\d+)?/g) || [0, 0, 0];
  return `rgba(${m[0]}, ${m[1]}, ${m[2]}, ${alpha})`;
}

function selection() {
  const category = $("category").value;
  const styled = $("style-control").checked;
  const b = board.categories[category] || board.categories.overall;
  // One row shape for both: the style-controlled figures replace the plain ones.
  const rows = b.models.map((m) => (styled ? { ...m, ...m.style_controlled } : m))
    .sort((x, y) => x.rank - y.rank || y.rating - x.rating);
  return { category, styled, b, rows };
}

function ratingsRows(rows) {
  return rows.map((m) => h("tr", { "data-model": m.model },
    h("td", { class: "rank", text: String(m.rank) }),
    h("td", {}, h("strong", { text: m.display_name }), h("small", { text: m.model })),
    h("td", { class: "rating", text: m.rating.toFixed(0) }),
    h("td", { class: "ci", text: m.ci_low === null ? "–" : `${m.ci_low.toFixed(0)} – ${m.ci_high.toFixed(0)}`,
              title: m.ci_low === null ? `needs ${board.min_battles_for_interval} battles` : "" }),
    h("td", { class: "battles", text: String(m.battles) }),
    h("td", { text: pct(m.win_rate) }),
    h("td", { text: `${m.wins} / ${m.losses} / ${m.ties} / ${m.both_bad}` }),
    h("td", { text: fmt.seconds(m.median_ttft_seconds) }),
    h("td", { text: fmt.rate(m.median_tokens_per_second) })));
}

function matrixTable(b) {
  const { models, win_rate: rates, battles } = b.pairwise;
  const names = Object.fromEntries(b.models.map((m) => [m.model, m.display_name]));
  const head = h("tr", {}, h("th", { scope: "col", text: "row vs column" }),
    ...models.map((m) => h("th", { scope: "col", text: names[m] || m })));
  const rows = models.map((row, i) => h("tr", {}, h("th", { scope: "row", text: names[row] || row }),
    ...models.map((col, j) => {
      if (i === j) return h("td", { class: "self", text: "·" });
      const rate = rates[i][j];
      const cell = h("td", { title: `${names[row]} vs ${names[col]}: ${battles[i][j]} battles` },
        rate === null ? "–" : `${pct(rate)} `, rate === null ? null : h("small", { text: `(${battles[i][j]})` }));
      if (rate !== null) {
        // Green where the row model wins, red where it loses.
        const hue = rate >= 0.5 ? 145 : 0;
        cell.style.background = `hsla(${hue}, 65%, 50%, ${Math.abs(rate - 0.5) * 0.7})`;
      }
      return cell;
    })));
  return [h("thead", {}, head), h("tbody", {}, ...rows)];
}

/** Draw a chart on canvas `id`; `count` (what it shows: models, or pairs) is left on the canvas for tests. */
function draw(id, config, count) {
  charts[id]?.destroy();
  const canvas = $(id);
  charts[id] = new window.Chart(canvas, config);
  canvas.dataset.rendered = String(count);
}

function baseOptions(text, grid) {
  return {
    responsive: true, maintainAspectRatio: false, animation: false,
    plugins: { legend: { display: false } },
    color: text,
    scales: {},
    _axis: { ticks: { color: text }, grid: { color: grid }, title: { color: text } },
  };
}

function axis(opts, extra) {
  return { ...opts._axis, ...extra, title: { ...opts._axis.title, ...(extra.title || {}) } };
}

function renderCharts({ b, rows, styled }) {
  if (!window.Chart) {
    for (const id of ["chart-intervals", "chart-speed", "chart-counts"]) $(id).replaceWith(h("p", { class: "hint", text: "Charts need the Chart.js library, which is missing from this install." }));
    return;
  }
  const text = cssColor("--text");
  const muted = cssColor("--muted");
  const grid = withAlpha(cssColor("--border"), 0.9);
  const accent = cssColor("--accent");
  const onAccent = cssColor("--accent-text");
  const label = (m) => m.display_name;
  const ratingName = styled ? "Rating (style controlled)" : "Rating";

  let opts = baseOptions(text, grid);
  draw("chart-intervals", {
    type: "bar",
    data: {
      labels: rows.map(label),
      datasets: [
        { type: "bar", label: "95% interval", data: rows.map((m) => (m.ci_low === null ? null : [m.ci_low, m.ci_high])),
          backgroundColor: withAlpha(accent, 0.3), borderColor: accent, borderWidth: 1, barPercentage: 0.5 },
        { type: "scatter", label: ratingName, data: rows.map((m, i) => ({ x: m.rating, y: label(m) })),
          backgroundColor: accent, pointRadius: 5 },
      ],
    },
    options: { ...opts, indexAxis: "y", plugins: { legend: { display: true, labels: { color: text } } },
      scales: { x: axis(opts, { beginAtZero: false, grace: "5%", title: { display: true, text: ratingName } }),
                y: axis(opts, {}) } },
  }, rows.length);

  opts = baseOptions(text, grid);
  const fast = rows.filter((m) => m.median_tokens_per_second !== null);
  draw("chart-speed", {
    type: "scatter",
    data: { datasets: [{ label: ratingName, data: fast.map((m) => ({ x: m.median_tokens_per_second, y: m.rating, name: label(m) })),
      backgroundColor: accent, pointRadius: 6 }] },
    options: { ...opts,
      plugins: { legend: { display: false },
        tooltip: { callbacks: { label: (c) => `${c.raw.name}: ${c.raw.y.toFixed(0)} at ${c.raw.x.toFixed(1)} tok/s` } } },
      layout: { padding: { right: 16, top: 8 } },
      scales: { x: axis(opts, { grace: "15%", title: { display: true, text: "Median tokens/s" } }),
                y: axis(opts, { grace: "10%", title: { display: true, text: ratingName } }) } },
    plugins: [{ id: "point-labels", afterDatasetsDraw(chart) {
      const ctx = chart.ctx;
      ctx.save();
      ctx.fillStyle = muted;
      ctx.font = "12px system-ui, sans-serif";
      chart.getDatasetMeta(0).data.forEach((pt, i) => {
        // Labels right of their point, or left of it near the right edge.
        const width = ctx.measureText(fast[i].display_name).width;
        const x = pt.x + 8 + width > chart.chartArea.right ? pt.x - 8 - width : pt.x + 8;
        ctx.fillText(fast[i].display_name, x, pt.y - 8);
      });
      ctx.restore();
    } }],
  }, fast.length);

  opts = baseOptions(text, grid);
  const names = Object.fromEntries(b.models.map((m) => [m.model, m.display_name]));
  const order = b.pairwise.models;
  const cells = [];
  let most = 1;
  order.forEach((row, i) => order.forEach((col, j) => {
    const n = b.pairwise.battles[i][j];
    most = Math.max(most, n);
    cells.push({ x: names[col] || col, y: names[row] || row, v: i === j ? null : n });
  }));
  draw("chart-counts", {
    type: "matrix",
    data: { datasets: [{ label: "Battles", data: cells,
      backgroundColor: (c) => (c.raw && c.raw.v ? withAlpha(accent, 0.15 + 0.85 * (c.raw.v / most)) : "transparent"),
      borderColor: grid, borderWidth: 1,
      width: ({ chart }) => (chart.chartArea || {}).width / Math.max(1, order.length) - 2,
      height: ({ chart }) => (chart.chartArea || {}).height / Math.max(1, order.length) - 2 }] },
    options: { ...opts,
      plugins: { legend: { display: false },
        tooltip: { callbacks: { title: () => "", label: (c) => `${c.raw.y} vs ${c.raw.x}: ${c.raw.v ?? "–"} battles` } } },
      scales: { x: axis(opts, { type: "category", labels: order.map((m) => names[m] || m), offset: true, grid: { display: false } }),
                // Rows top-down in rank order, as in the win-rate table.
                y: axis(opts, { type: "category", labels: order.map((m) => names[m] || m).reverse(), offset: true,
                                grid: { display: false } }) } },
    plugins: [{ id: "cell-counts", afterDatasetsDraw(chart) {
      const ctx = chart.ctx;
      ctx.save();
      ctx.font = "13px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      chart.getDatasetMeta(0).data.forEach((el, i) => {
        // On a strong cell the accent's own text colour; on a pale one the page's.
        ctx.fillStyle = cells[i].v / most > 0.5 ? onAccent : text;
        if (cells[i].v !== null) ctx.fillText(String(cells[i].v), el.x + el.width / 2, el.y + el.height / 2);
      });
      ctx.restore();
    } }],
  }, cells.length);
}

function render() {
  if (!board) return;
  const sel = selection();
  const { b, styled } = sel;
  const excluded = Object.values(board.excluded || {}).reduce((a, n) => a + n, 0);
  $("ratings-hint").textContent = board.votes
    ? `${b.battles} counted battle${b.battles === 1 ? "" : "s"} in this category; ${board.votes} vote${board.votes === 1 ? "" : "s"} in all`
      + (excluded ? `, ${excluded} left out (an answer named its model, a side gave no answer, or an excluded client)` : "")
      + `. Intervals from ${board.bootstrap_rounds} bootstrap resamples, shown from ${board.min_battles_for_interval} battles on; `
      + "speed is the median over the voted answers." + (styled ? " Style control is on." : "")
    : "No votes yet: run a battle and vote to start the leaderboard.";
  $("ratings").tBodies[0].replaceChildren(...ratingsRows(sel.rows));
  $("matrix").replaceChildren(...matrixTable(b));
  renderCharts(sel);
  document.documentElement.dataset.category = sel.category;
}

async function load() {
  try {
    const response = await fetch("/api/leaderboard", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    board = await response.json();
  } catch (e) {
    $("ratings-hint").textContent = `Could not load the leaderboard: ${e.message}`;
    return;
  }
  const wanted = new URLSearchParams(location.search).get("category");
  if (wanted && board.categories[wanted]) $("category").value = wanted;
  render();
  $("generated").textContent = `Updated ${new Date(board.generated_at * 1000).toLocaleTimeString()}`;
  document.documentElement.dataset.ready = "true";
}

// The votes export holds every user's prompts, so it takes the gateway's API key when keys are
// required, which a plain link cannot send: the key the arena page keeps in this tab is sent and
// the answer saved from a blob.
async function downloadVotes(event) {
  event.preventDefault();
  let key = null;
  try { key = sessionStorage.getItem("arena-api-key"); } catch (_) { /* storage refused: no key */ }
  try {
    const response = await fetch(event.currentTarget.href, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    if (response.status === 401) throw new Error(`${await errorMessage(response)} Enter it on the arena page, then come back.`);
    if (!response.ok) throw new Error(await errorMessage(response));
    const url = URL.createObjectURL(await response.blob());
    const save = Object.assign(document.createElement("a"), { href: url, download: "votes.jsonl" });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) {
    $("generated").textContent = `Could not download the votes: ${e.message}`;
  }
}

document.querySelector('a[href="/api/votes.jsonl"]').addEventListener("click", downloadVotes);
$("category").addEventListener("change", render);
$("style-control").addEventListener("change", render);
// Charts draw on a canvas with the theme's colours: draw again when the theme changes.
new MutationObserver(render).observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", render);
initThemeToggle($("theme-toggle"));
load();
