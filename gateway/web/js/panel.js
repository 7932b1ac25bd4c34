// One answer panel: a title, a transcript (user turns as text, answers as sanitized markdown),
// a stop button and the stats of the last answer.
import { renderMarkdown } from "./markdown.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

export const fmt = {
  seconds: (s) => (s === null || s === undefined ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`),
  count: (n) => (n === null || n === undefined ? "–" : String(n)),
  rate: (r) => (r === null || r === undefined ? "–" : r.toFixed(1)),
};

const STATUS_TEXT = { idle: "", streaming: "streaming", done: "done", stopped: "stopped", error: "failed", waiting: "waiting" };
// A prompt this long is shown collapsed, so what comes under it (an answer, an error) stays in view.
const LONG_PROMPT_CHARS = 600;
const LONG_PROMPT_LINES = 10;
// No new text for this long while streaming: the badge says how long it has been.
const STALL_NOTICE_MS = 3000;

export class Panel {
  constructor({ key, title, subtitle = "", onStop = null, blind = false }) {
    // A blind panel (a battle side) shows no timing or count until reveal(): speed tells models apart.
    this.blind = blind;
    this.title = h("h2", { class: "panel-title" });
    this.badge = h("span", { class: "badge", hidden: true });
    this.stopButton = h("button", { type: "button", class: "stop", hidden: true, text: "Stop",
      "aria-label": `Stop ${title}`, onclick: () => onStop && onStop() });
    this.transcript = h("div", { class: "transcript", role: "log", "aria-label": `Answers of ${title}` });
    this.cells = {};
    const stat = (name, label) => {
      this.cells[name] = h("b", { text: "–" });
      return h("div", { "data-stat": name }, h("span", { text: label }), this.cells[name]);
    };
    this.stats = h("footer", { class: "stats" }, stat("ttft", "First token"), stat("total", "Total"),
      stat("tokens", "Tokens"), stat("tps", "Tokens/s"));
    this.blindNote = h("footer", { class: "stats blind", text: "Speed and tokens are shown after your vote.", hidden: !blind });
    this.stats.hidden = blind;
    this.el = h("article", { class: "panel", "data-key": key },
      h("header", { class: "panel-head" }, this.title, this.badge, this.stopButton), this.transcript, this.stats,
      this.blindNote);
    this.setTitle(title, subtitle);
  }

  setTitle(title, subtitle = "") {
    this.title.replaceChildren(title, subtitle ? h("small", { text: subtitle }) : "");
  }

  setStatus(status) {
    this.el.dataset.status = status;
    this.badge.hidden = !STATUS_TEXT[status];
    this.badge.textContent = STATUS_TEXT[status] || "";
    this.badge.className = `badge ${status}`;
    this.stopButton.hidden = status !== "streaming" && status !== "waiting";
  }

  showStats(s) {
    if (this.blind) return;
    this.cells.ttft.textContent = fmt.seconds(s.ttft);
    this.cells.total.textContent = fmt.seconds(s.total);
    this.cells.tokens.textContent = fmt.count(s.tokens);
    this.cells.tps.textContent = fmt.rate(s.tps);
  }

  /** After the vote: the side's figures as the gateway measured them. */
  reveal(s) {
    this.blind = false;
    this.blindNote.hidden = true;
    this.stats.hidden = false;
    this.showStats(s);
  }

  clear() {
    this.transcript.replaceChildren();
    this.showStats({});
    this.setStatus("idle");
  }

  note(text, cls = "note") {
    this.append(h("div", { class: `msg ${cls}`, text }));
  }

  addUser(text) {
    if (text.length <= LONG_PROMPT_CHARS && text.split("\n").length <= LONG_PROMPT_LINES) {
      this.append(h("div", { class: "msg user", text }));
      return;
    }
    const body = h("div", { class: "msg-text", text });
    const toggle = h("button", { type: "button", class: "expand", "aria-expanded": "false",
      text: `Show the whole prompt (${text.length.toLocaleString("en")} characters)` });
    const el = h("div", { class: "msg user long collapsed" }, body, toggle);
    toggle.addEventListener("click", () => {
      const open = el.classList.toggle("collapsed") === false;
      toggle.setAttribute("aria-expanded", String(open));
      toggle.textContent = open ? "Show less" : `Show the whole prompt (${text.length.toLocaleString("en")} characters)`;
    });
    this.append(el);
  }

  /** The last answer folds into "previous answer" (kept to compare) before a new one comes. */
  foldLastAnswer(summary = "Previous answer") {
    const answers = this.transcript.querySelectorAll(":scope > .msg.assistant");
    const last = answers[answers.length - 1];
    if (!last) return;
    const ending = [];
    for (let n = last.nextElementSibling; n && n.classList.contains("note"); n = n.nextElementSibling) ending.push(n);
    const details = h("details", { class: "previous" }, h("summary", { text: summary }));
    last.replaceWith(details);
    details.append(last, ...ending);
  }

  /** While no text comes: "waiting 4 s", or "no new text 5 s" once it stalls; stops at the end. */
  startClock(lastText) {
    const started = performance.now();
    const tick = () => {
      const status = this.el.dataset.status;
      if (status !== "waiting" && status !== "streaming") return;
      const now = performance.now();
      const quiet = now - (lastText() ?? started);
      if (status === "waiting") this.badge.textContent = `waiting ${Math.floor((now - started) / 1000)} s`;
      else this.badge.textContent = quiet >= STALL_NOTICE_MS ? `no new text ${Math.floor(quiet / 1000)} s` : "streaming";
    };
    const timer = setInterval(tick, 500);
    return () => clearInterval(timer);
  }

  append(el) {
    const stick = this.nearBottom();
    this.transcript.append(el);
    if (stick) this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  nearBottom() {
    const t = this.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 48;
  }

  /** A new answer bubble; returns {update(text, stats), finish(result)}. Renders at most once a frame. */
  startAnswer() {
    const el = h("div", { class: "msg assistant md pending" });
    this.append(el);
    this.setStatus("waiting");
    this.showStats({});
    let latest = "";
    let scheduled = false;
    let lastText = null;
    const stopClock = this.startClock(() => lastText);
    const render = () => {
      scheduled = false;
      const stick = this.nearBottom();
      renderMarkdown(el, latest);
      if (stick) this.transcript.scrollTop = this.transcript.scrollHeight;
    };
    return {
      update: (text, stats) => {
        latest = text;
        lastText = performance.now();
        this.setStatus("streaming");
        this.showStats(stats);
        if (!scheduled) { scheduled = true; requestAnimationFrame(render); }
      },
      finish: (result) => {
        stopClock();
        latest = result.text;
        render();
        el.classList.remove("pending");
        if (!result.text) el.remove();
        this.showStats(result);
        this.setStatus(result.status);
        // How the answer ended, said plainly: "done" alone hides a cut or an empty answer.
        if (result.status === "error") this.note(result.error || "The model failed.", "error");
        else if (!result.text || !result.text.trim()) this.note("Empty answer: the model said nothing.", "note ending");
        else if (result.status === "stopped") this.note("Stopped.", "note ending");
        else if (result.finishReason === "length") this.note("Cut at the token limit.", "note ending");
      },
    };
  }
}
