// Renders a session's events: turns with live markdown (sanitized by markdown.js), the
// orchestrator's weights, the council's rankings, the roundtable's convergence chart, the
// final answer. The same code draws a live stream and a stored transcript.
import { renderMarkdown } from "./markdown.js";
import { cssColor, effectiveTheme } from "./theme-toggle.js";

const ROLE = {
  contribution: "contribution", answer: "answer", revision: "revision", ranking: "ranking",
  plan: "plan", judge: "judgement", synthesis: "final answer",
};

const text = (el, value) => { el.textContent = value; return el; };
const make = (tag, cls) => { const el = document.createElement(tag); if (cls) el.className = cls; return el; };
const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);

export class SessionView {
  constructor(doc, mode) {
    this.doc = doc;
    this.mode = mode;
    this.$ = (id) => doc.getElementById(id);
    this.chart = null;
    new MutationObserver(() => this.drawChart()).observe(doc.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.drawChart());
    this.reset("");
  }

  reset(question) {
    this.question = question;
    this.turns = new Map();
    this.names = new Map();
    this.pending = new Set();
    this.rounds = [];
    for (const id of ["weights-card", "rankings-card", "convergence-card", "synthesis-card", "session-links"]) this.$(id).hidden = true;
    for (const id of ["turns", "judgements", "ranker-notes"]) this.$(id).replaceChildren();
    for (const id of ["weights", "rankings", "convergence"]) this.$(id).tBodies[0].replaceChildren();
    if (this.chart) this.chart.destroy();
    this.chart = null;
    this.$("convergence-chart").replaceChildren();
    this.status("");
    this.state(question ? "running" : "");
  }

  /** The session's state on the status line (data-state), for styles and tests. */
  state(value) { this.$("status").dataset.state = value; }

  status(message, speaking = null) {
    const line = this.$("status");
    line.replaceChildren();
    if (speaking) {
      line.append("Speaking: ", text(make("span", "speaking"), speaking));
      if (message) line.append(` · ${message}`);
    } else {
      line.textContent = message;
    }
  }

  fail(message) { this.status(""); this.$("status").append(text(make("span", "error-text"), message)); this.state("error"); }
  stopped() { this.status("Stopped: every generation of this session was cancelled."); this.state("stopped"); }

  links(mode, id) {
    this.$("permalink").href = `/modes/${mode}?t=${encodeURIComponent(id)}`;
    this.$("export").href = `/api/modes/transcripts/${encodeURIComponent(id)}?download=1`;
    this.$("session-links").hidden = false;
  }

  replay(transcript) {
    this.reset(transcript.question);
    for (const p of transcript.participants) this.names.set(p.id, p.name);
    for (const event of transcript.events) this.handle(event);
    if (transcript.status === "stopped") this.stopped();
    else if (transcript.status === "running") this.status("This session has not finished.");
    else if (transcript.status === "interrupted") {
      this.status("This session was cut off: the gateway running it stopped before it ended.");
      this.state("interrupted");
    }
  }

  handle(event) {
    const handler = this[`on_${event.type}`];
    if (handler) handler.call(this, event);
  }

  speakingNow() {
    const names = [...this.pending].map((t) => this.turns.get(t)?.name).filter(Boolean);
    this.status("", names.length ? names.join(", ") : null);
  }

  on_turn_start(e) {
    this.names.set(e.participant, e.name);
    const el = make("article", "turn active");
    el.dataset.turn = e.turn;
    el.dataset.participant = e.participant;
    el.dataset.role = e.role;
    const head = make("div", "panel-head");
    const title = text(make("h3", "panel-title"), e.name);
    title.append(text(make("small"), `${ROLE[e.role] || e.role}${e.round ? ` · round ${e.round}` : ""}`));
    const badge = text(make("span", "badge streaming"), "speaking");
    head.append(title, badge);
    const body = make("div", "body md");
    el.append(head, body);
    this.$("turns").append(el);
    this.turns.set(e.turn, { el, body, badge, name: e.name, role: e.role, text: "", frame: 0 });
    this.pending.add(e.turn);
    this.speakingNow();
  }

  on_token(e) {
    const turn = this.turns.get(e.turn);
    if (!turn) return;
    turn.text += e.text;
    if (!turn.frame) turn.frame = requestAnimationFrame(() => { turn.frame = 0; renderMarkdown(turn.body, turn.text); });
  }

  on_turn_end(e) {
    let turn = this.turns.get(e.turn);
    if (!turn) { this.on_turn_start({ ...e, name: this.names.get(e.participant) || e.participant }); turn = this.turns.get(e.turn); }
    if (turn.frame) cancelAnimationFrame(turn.frame);
    turn.text = e.text || turn.text;
    if (["plan", "judge", "ranking"].includes(turn.role)) {
      turn.body.replaceChildren(text(make("pre", "json"), turn.text));
    } else {
      renderMarkdown(turn.body, turn.text);
    }
    turn.el.classList.remove("active");
    turn.el.classList.toggle("skipped", e.status !== "done");
    turn.badge.className = `badge ${e.status === "done" ? "done" : "error"}`;
    turn.badge.textContent = e.status === "done" ? `${e.seconds.toFixed(1)} s` : "skipped";
    if (e.error) turn.el.append(text(make("p", "note"), `Skipped: ${e.error}`));
    this.pending.delete(e.turn);
    this.speakingNow();
  }

  on_evaluation(e) {
    if (e.kind === "plan") {
      this.$("weights-card").hidden = false;
      this.$("weights-hint").textContent = `Domains: ${(e.domains || []).join(", ")}` +
        (e.source === "fallback" ? ` · ${e.note}` : " · from the orchestrator");
      const body = this.$("weights").tBodies[0];
      body.replaceChildren();
      (e.order || Object.keys(e.weights)).forEach((pid, i) => {
        const row = body.insertRow();
        text(row.insertCell(), String(i + 1));
        text(row.insertCell(), this.names.get(pid) || pid);
        text(row.insertCell(), pct(e.weights[pid]));
      });
    } else if (e.kind === "judgement" || e.kind === "early_stop") {
      this.$("weights-card").hidden = false;
      const note = e.kind === "early_stop" ? e.note
        : `Round ${e.round}: ${e.complete ? "complete" : "not complete yet"}${e.reason ? ` (${e.reason})` : ""}` +
          (e.source === "fallback" ? " [judge's answer unreadable]" : "");
      this.$("judgements").append(text(make("li"), note));
    } else if (e.kind === "convergence") {
      this.rounds.push(e);
      this.$("convergence-card").hidden = false;
      const row = this.$("convergence").tBodies[0].insertRow();
      row.dataset.round = e.round;
      text(row.insertCell(), e.round === 0 ? "0 (first answers)" : String(e.round));
      text(row.insertCell(), e.similarity === null ? "–" : e.similarity.toFixed(2));
      text(row.insertCell(), (e.answered || []).map((p) => this.names.get(p) || p).join(", "));
      this.drawChart();
    }
  }

  on_ranking(e) {
    this.$("rankings-card").hidden = false;
    if (e.kind === "ranker") {
      const order = (e.order || []).map((p) => this.names.get(p) || p).join(" > ") || "no readable ranking";
      const how = { json: "", text: " (read from its text)", single: " (only one other answer)", none: "" }[e.source] ?? "";
      this.$("ranker-notes").append(text(make("li"), `${this.names.get(e.ranker) || e.ranker}: ${order}${how}`));
      return;
    }
    const body = this.$("rankings").tBodies[0];
    body.replaceChildren();
    e.table.forEach((s, i) => {
      const row = body.insertRow();
      text(row.insertCell(), String(i + 1));
      text(row.insertCell(), s.name);
      text(row.insertCell(), s.mean_rank === null ? "–" : s.mean_rank.toFixed(2));
      text(row.insertCell(), `${s.rankers} of ${e.rankers}`);
      text(row.insertCell(), String(s.first_places));
    });
  }

  on_synthesis(e) {
    this.$("synthesis-card").hidden = false;
    this.$("synthesis-by").textContent = `Written by ${e.name}`;
    renderMarkdown(this.$("synthesis"), e.text);
  }

  on_error(e) {
    if (e.code === "turn_skipped") return; // shown on the turn itself
    this.$("turns").append(text(make("p", "msg error"), e.message));
  }

  on_done(e) {
    this.pending.clear();
    const how = { done: "Finished", timeout: "Reached its time limit", error: "Ended with an error" }[e.status] || e.status;
    this.status(`${how} in ${e.seconds.toFixed(1)} s.`);
    this.state(e.status);
  }

  /** The convergence chart (Chart.js, loaded as a classic script: window.Chart), in the theme's colours. */
  drawChart() {
    const box = this.$("convergence-chart");
    if (!this.rounds.length) return;
    if (!window.Chart) {
      box.replaceChildren(text(make("p", "hint"), "The chart needs the Chart.js library, which is missing from this install."));
      return;
    }
    const accent = cssColor("--accent");
    const muted = cssColor("--muted");
    const grid = cssColor("--border");
    const axis = (title, extra) => ({ ticks: { color: muted }, grid: { color: grid },
      title: { display: true, text: title, color: muted }, ...extra });
    if (this.chart) this.chart.destroy();
    let canvas = box.querySelector("canvas");
    if (!canvas) {
      canvas = make("canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", "Similarity of the answers per round");
      box.replaceChildren(canvas);
    }
    box.dataset.theme = effectiveTheme();
    box.dataset.axis = muted;
    box.dataset.points = String(this.rounds.length);
    this.chart = new window.Chart(canvas, {
      type: "line",
      data: {
        labels: this.rounds.map((r) => String(r.round)),
        datasets: [{ label: "similarity", data: this.rounds.map((r) => r.similarity), borderColor: accent,
          backgroundColor: accent, pointRadius: 4, tension: 0, spanGaps: true }],
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { display: false } },
        scales: { x: axis("round", {}), y: axis("similarity", { min: 0, max: 1 }) },
      },
    });
  }
}
