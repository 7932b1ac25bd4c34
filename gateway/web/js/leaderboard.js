// The leaderboard page: ratings with intervals next to speed, and the pairwise win-rate matrix.
import { fmt, h } from "./panel.js";
import { initThemeToggle } from "./theme-toggle.js";

const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(0)}%`);

function ratingsRows(board) {
  return board.models.map((m) => h("tr", { "data-model": m.model },
    h("td", { text: String(m.rank) }),
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

function matrixTable(board) {
  const { models, win_rate: rates, battles } = board.pairwise;
  const names = Object.fromEntries(board.models.map((m) => [m.model, m.display_name]));
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

async function load() {
  let board;
  try {
    const response = await fetch("/api/leaderboard", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    board = await response.json();
  } catch (e) {
    $("ratings-hint").textContent = `Could not load the leaderboard: ${e.message}`;
    return;
  }
  $("ratings-hint").textContent = board.votes
    ? `${board.votes} vote${board.votes === 1 ? "" : "s"}. Bradley-Terry ratings on the Elo scale (400 points = 10:1 odds), `
      + `${Math.round(board.confidence * 100)}% intervals from ${board.bootstrap_rounds} bootstrap resamples `
      + `(shown from ${board.min_battles_for_interval} battles on); `
      + "speed is the median over the voted answers."
    : "No votes yet: run a battle and vote to start the leaderboard.";
  $("ratings").tBodies[0].replaceChildren(...ratingsRows(board));
  $("matrix").replaceChildren(...matrixTable(board));
  $("generated").textContent = `Updated ${new Date(board.generated_at * 1000).toLocaleTimeString()}`;
  document.documentElement.dataset.ready = "true";
}

initThemeToggle($("theme-toggle"));
load();
