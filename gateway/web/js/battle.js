// Battle mode: two anonymous models answer one prompt, and any follow-ups (up to the battle's
// turn limit), each in its own conversation; the vote covers the whole conversation and
// reveals who was who. The browser never learns a model's name, speed or token counts before
// the vote. The battle token from the gateway proves this page opened the battle: it goes with
// every stream, follow-up and vote (X-Battle-Token).
import { Panel, h } from "./panel.js";
import { errorMessage, streamCompletion } from "./stream.js";

const WINNER_TEXT = { model_a: "A is better", model_b: "B is better", tie: "a tie", both_bad: "both are bad" };
const TOKEN_KEY = (id) => `arena-battle-token:${id}`;
const streamUrl = (id, side) => `/api/battles/${encodeURIComponent(id)}/sides/${side}/stream`;

export class BattleMode {
  constructor({ panelsEl, voteBar, resultEl, afterVote, shareEl, settings, onBusyChange }) {
    this.panelsEl = panelsEl;
    this.voteBar = voteBar;
    this.resultEl = resultEl;
    this.afterVote = afterVote;
    this.shareEl = shareEl;
    this.settings = settings;
    this.onBusyChange = onBusyChange;
    this.battle = null;
    this.token = null;
    this.voted = false;
    this.settled = false;
    this.sides = {};
    this.starting = false;
    for (const button of voteBar.querySelectorAll("button[data-winner]")) {
      button.addEventListener("click", () => this.vote(button.dataset.winner));
    }
    // One key per verdict once both answers are in (not while typing in a field).
    const KEYS = { a: "model_a", b: "model_b", t: "tie", x: "both_bad" };
    document.addEventListener("keydown", (e) => {
      const winner = KEYS[e.key.toLowerCase()];
      // Only while the vote bar is on screen: not from the Compare view, whose keys are its own.
      if (!winner || e.ctrlKey || e.metaKey || e.altKey || voteBar.hidden || voteBar.closest("[hidden]")) return;
      if (e.target.closest && e.target.closest("input, textarea, select, [contenteditable]")) return;
      const button = voteBar.querySelector(`button[data-winner="${winner}"]`);
      if (button && !button.disabled) { e.preventDefault(); button.click(); }
    });
    // After the vote: the same prompt to a new pair, the sides again, a link to share.
    afterVote.querySelector("[data-action=new-round]").addEventListener("click", () => this.newRound());
    for (const b of afterVote.querySelectorAll("[data-regenerate]")) {
      b.addEventListener("click", () => this.regenerate(b.dataset.regenerate === "both" ? ["a", "b"] : [b.dataset.regenerate]));
    }
    afterVote.querySelector("[data-action=share]").addEventListener("click", () => this.share());
    this.reset({ keepUrl: true });  // the URL may name a battle to restore
  }

  get busy() {
    return this.starting || Object.values(this.sides).some((s) => s.controller);
  }

  canSend() {
    return !this.busy;
  }

  /** A follow-up goes to the open battle: both answered, not voted on, turns left. */
  canFollowUp() {
    const results = Object.values(this.sides).map((x) => x.result);
    return Boolean(this.battle) && !this.voted && !this.settled && results.length === 2
      && results.every((r) => r && (r.status === "done" || r.status === "stopped") && r.text.trim())
      && this.battle.turn < this.battle.max_turns;
  }

  /** What a follow-up would carry along (the longer side's conversation), for the token estimate. */
  conversationText() {
    if (!this.canFollowUp()) return "";
    return Object.values(this.sides).map((x) => x.panel.transcript.textContent).reduce((a, b) => (b.length > a.length ? b : a), "");
  }

  sendLabel() {
    return this.canFollowUp() ? "Ask both" : "Battle";
  }

  headers(extra = {}) {
    const s = this.settings();
    return { ...extra, ...(s.apiKey ? { Authorization: `Bearer ${s.apiKey}` } : {}),
             ...(this.token ? { "X-Battle-Token": this.token } : {}) };
  }

  /** An unvoted battle with something to lose (answers given, or in progress). */
  get unvoted() {
    return Boolean(this.battle) && !this.voted && !this.settled;
  }

  /** "New" on an unvoted battle warns first; a second "New" abandons it. Returns whether it reset. */
  abandon() {
    if (this.unvoted && !this.warnedAbandon) {
      this.warnedAbandon = true;
      this.resultEl.textContent = "This battle has no vote yet: press New again to abandon it, or vote first.";
      return false;
    }
    this.reset();
    return true;
  }

  reset({ keepUrl = false } = {}) {
    for (const s of Object.values(this.sides)) s.controller?.abort();
    if (!keepUrl && location.hash.startsWith("#battle/")) history.replaceState(null, "", "#battle");
    this.warnedAbandon = false;
    this.battle = null;
    this.token = null;
    this.voted = false;
    this.settled = false;
    this.sides = {};
    const panels = ["a", "b"].map((side) => {
      const panel = new Panel({ key: side, title: `Model ${side.toUpperCase()}`, onStop: () => this.stop(side), blind: true });
      this.sides[side] = { panel, controller: null, result: null };
      return panel.el;
    });
    this.panelsEl.replaceChildren(...panels);
    this.voteBar.hidden = true;
    this.setVoteButtons(false);
    this.resultEl.replaceChildren();
    this.afterVote.hidden = true;
    this.shareEl.replaceChildren();
  }

  setVoteButtons(enabled, chosen = null) {
    for (const b of this.voteBar.querySelectorAll("button")) {
      b.disabled = !enabled;
      b.classList.toggle("chosen", b.dataset.winner === chosen);
    }
  }

  async send(prompt) {
    if (this.busy) return false;
    if (this.canFollowUp()) return this.followUp(prompt);
    this.reset();
    const s = this.settings();
    this.starting = true;
    this.onBusyChange();
    this.resultEl.textContent = "Drawing two models…";
    return this.start(prompt, s, () => fetch("/api/battles", {
      method: "POST",
      headers: this.headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ prompt, system: s.system, temperature: s.temperature, max_tokens: s.maxTokens }),
    }));
  }

  /** Open a battle with `request()` (a POST answering a battle and its token), then stream both sides. */
  async start(prompt, s, request) {
    let response;
    try {
      response = await request();
    } catch (e) {
      response = null;
      this.resultEl.textContent = `Could not reach the gateway: ${e.message}`;
    }
    this.starting = false;
    if (response && !response.ok) this.resultEl.textContent = await errorMessage(response);
    if (!response || !response.ok) { this.onBusyChange(); return true; }
    this.battle = await response.json();
    this.token = this.battle.token;
    // The battle survives a reload: its id in the URL, its token in this tab's storage.
    try { sessionStorage.setItem(TOKEN_KEY(this.battle.id), this.token); } catch (_) { /* not kept */ }
    history.replaceState(null, "", `#battle/${encodeURIComponent(this.battle.id)}`);
    this.resultEl.textContent = "";
    await Promise.all(["a", "b"].map((side) => this.run(side, prompt, s)));
    return true;
  }

  /** Show the battle `id` as the gateway has it (after a reload): every turn, then what is left to do. */
  async restore(id) {
    let token = null;
    try { token = sessionStorage.getItem(TOKEN_KEY(id)); } catch (_) { /* none */ }
    let response;
    try {
      response = await fetch(`/api/battles/${encodeURIComponent(id)}`, { headers: this.headers() });
    } catch (e) {
      this.resultEl.textContent = `Could not reach the gateway: ${e.message}`;
      return;
    }
    if (!response.ok) {
      this.resultEl.textContent = await errorMessage(response);
      history.replaceState(null, "", "#battle");
      return;
    }
    const view = await response.json();
    this.reset();
    history.replaceState(null, "", `#battle/${encodeURIComponent(id)}`);
    this.battle = { ...view, sides: Object.fromEntries(["a", "b"].map((s) => [s, { ...view.sides[s], stream_url: streamUrl(id, s) }])) };
    this.token = token;
    this.voted = view.vote !== null;
    const live = token && !this.voted ? ["a", "b"].filter((side) => view.sides[side].status === "pending") : [];
    const results = fillBattlePanels(Object.fromEntries(["a", "b"].map((side) => [side, this.sides[side].panel])), view, live);
    for (const side of ["a", "b"]) if (!live.includes(side)) this.sides[side].result = results[side];
    if (this.voted) {
      this.showRevealed(view.revealed, view.vote, true);
    } else if (!token) {
      this.resultEl.textContent = "This battle was opened in another tab or browser: you can read it, not vote on it.";
    } else if (live.length) {
      await Promise.all(live.map((side) => this.run(side, view.prompt, this.settings())));
    } else {
      this.offerVote();
    }
    this.onBusyChange();
  }

  async followUp(prompt) {
    const s = this.settings();
    this.starting = true;
    this.voteBar.hidden = true;
    this.onBusyChange();
    const view = await this.post("/turns", { prompt }, this.resultEl);
    this.starting = false;
    if (!view) { this.voteBar.hidden = false; this.onBusyChange(); return true; }
    this.battle = { ...view, token: this.token };
    this.resultEl.textContent = "";
    for (const side of Object.values(this.sides)) side.result = null;
    await Promise.all(["a", "b"].map((side) => this.run(side, prompt, s)));
    return true;
  }

  async run(side, prompt, s, { offerVote = true } = {}) {
    const state = this.sides[side];
    const controller = new AbortController();
    state.controller = controller;
    if (prompt !== null) state.panel.addUser(prompt);
    const answer = state.panel.startAnswer();
    this.onBusyChange();
    const result = await streamCompletion(this.battle.sides[side].stream_url, {}, {
      signal: controller.signal,
      headers: this.headers(),
      onText: answer.update,
    });
    answer.finish(result);
    state.controller = null;
    state.result = result;
    this.onBusyChange();
    if (offerVote && Object.values(this.sides).every((x) => x.result)) this.offerVote();
  }

  offerVote() {
    const results = Object.values(this.sides).map((x) => x.result);
    if (!results.every((r) => (r.status === "done" || r.status === "stopped") && r.text.trim())) {
      // A side that failed or said nothing is not a contest: nothing to vote on.
      this.voteBar.hidden = true;
      this.resultEl.textContent = "A side gave no answer, so this battle cannot be voted on. "
        + "Try a new round with the same prompt, or send a prompt to start a new battle.";
      this.settled = true;
      this.showAfterVote({ regenerate: false, share: false });
      this.onBusyChange();
      return;
    }
    this.voteBar.hidden = false;
    this.setVoteButtons(true);
    this.voteBar.querySelector("button").focus();  // vote by key (A, B, T, X) or Tab along the bar
    const left = this.battle.max_turns - this.battle.turn;
    this.resultEl.textContent = left > 0
      ? `Which side is better over the whole conversation? Vote, or ask both a follow-up (${left} left).`
      : "Which side is better over the whole conversation? That was the last turn: vote.";
    this.onBusyChange();
  }

  stop(side) {
    this.sides[side]?.controller?.abort();
  }

  stopAll() {
    for (const side of Object.keys(this.sides)) this.stop(side);
  }

  async vote(winner) {
    if (!this.battle) return;
    this.setVoteButtons(false, winner);
    let response;
    try {
      response = await fetch(`/api/battles/${encodeURIComponent(this.battle.id)}/vote`, {
        method: "POST",
        headers: this.headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ winner }),
      });
    } catch (e) {
      this.resultEl.textContent = `The vote did not reach the gateway: ${e.message}`;
      this.setVoteButtons(true);
      return;
    }
    if (!response.ok) {
      this.resultEl.textContent = await errorMessage(response);
      if (response.status !== 409) this.setVoteButtons(true);
      return;
    }
    const body = await response.json();
    this.voted = true;
    this.onBusyChange();
    this.showRevealed(body.revealed, winner, body.counted);
  }

  /** The battle's first prompt and settings again, to a new pair. */
  async newRound() {
    if (!this.battle || this.busy) return;
    const old = this.battle;
    const prompt = old.earlier_turns?.length ? old.earlier_turns[0].prompt : old.prompt;
    const token = this.token;
    const s = this.settings();
    this.reset();
    this.starting = true;
    this.onBusyChange();
    this.resultEl.textContent = "Drawing two models for a new round…";
    return this.start(prompt, s, () => fetch(`/api/battles/${encodeURIComponent(old.id)}/rounds`, {
      method: "POST", headers: { ...this.headers(), ...(token ? { "X-Battle-Token": token } : {}) },
    }));
  }

  /** Ask sides again after the vote: each earlier answer folds into "previous answer" to compare. */
  async regenerate(sides) {
    if (!this.battle || !this.voted || this.busy) return;
    this.starting = true;
    this.onBusyChange();
    const view = await this.post("/regenerate", { sides }, this.shareEl);
    this.starting = false;
    if (!view) { this.onBusyChange(); return; }
    this.battle = { ...this.battle, ...view, token: this.token };
    this.shareEl.replaceChildren();
    await Promise.all(sides.map(async (side) => {
      const state = this.sides[side];
      state.panel.foldLastAnswer("Previous answer");
      await this.run(side, null, this.settings(), { offerVote: false });
    }));
    // The new answers' speed, as the gateway measured it (the battle is revealed already).
    try {
      const fresh = await (await fetch(`/api/battles/${encodeURIComponent(this.battle.id)}`, { headers: this.headers() })).json();
      this.battle = { ...this.battle, regenerated: fresh.regenerated };
      this.showRevealed(fresh.revealed, fresh.vote, true);
    } catch (_) { /* the figures stay as they were */ }
  }

  /** A read-only link to this voted battle (the gateway refuses one before the vote). */
  async share() {
    if (!this.battle) return;
    const made = await this.post("/share", null, this.shareEl);
    if (made) showShareLink(this.shareEl, made.url);
  }

  /** POST to this battle's `path` (with its token); the answer's JSON, or null once `messageEl` says why not. */
  async post(path, body, messageEl) {
    let response;
    try {
      response = await fetch(`/api/battles/${encodeURIComponent(this.battle.id)}${path}`, {
        method: "POST", headers: this.headers(body ? { "Content-Type": "application/json" } : {}),
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    } catch (e) {
      messageEl.textContent = `Could not reach the gateway: ${e.message}`;
      return null;
    }
    if (!response.ok) {
      messageEl.textContent = await errorMessage(response);
      return null;
    }
    return response.json();
  }

  /** After the vote: names, speed and tokens on the panels, and the outcome. */
  showRevealed(revealed, winner, counted) {
    for (const side of ["a", "b"]) {
      const who = revealed[side];
      const panel = this.sides[side].panel;
      panel.setTitle(`Model ${side.toUpperCase()}: ${who.display_name}`, who.model);
      panel.el.classList.add("revealed");
      panel.el.dataset.model = who.model;
      panel.reveal({ ttft: who.ttft, total: who.total, tokens: who.tokens, tps: who.tokens_per_second });
    }
    this.voteBar.hidden = false;
    this.setVoteButtons(false, winner);
    this.resultEl.replaceChildren(
      `You voted ${WINNER_TEXT[winner]}. Model A was ${revealed.a.display_name}, Model B was ${revealed.b.display_name}. `,
      counted ? "" : h("span", { class: "flag-note", text: "An answer named a model, so this vote is recorded but not counted. " }),
      h("a", { href: "/leaderboard", text: "See the leaderboard" }), ", or type a new prompt for the next battle.");
    this.showAfterVote({ regenerate: Boolean(this.token), share: Boolean(this.token) });
  }

  /** The actions once a battle is settled; only the tab that opened it (its token) may use them. */
  showAfterVote({ regenerate, share }) {
    this.afterVote.hidden = !this.token;
    const left = (side) => (this.battle?.max_regenerations ?? 0) - ((this.battle?.regenerated || {})[side] || 0);
    for (const b of this.afterVote.querySelectorAll("[data-regenerate]")) {
      const sides = b.dataset.regenerate === "both" ? ["a", "b"] : [b.dataset.regenerate];
      b.hidden = !regenerate;
      b.disabled = sides.some((side) => left(side) <= 0);
    }
    this.afterVote.querySelector("[data-action=share]").hidden = !share;
  }
}

/**
 * Fill a battle's two panels from its view (a reload, a share): every earlier turn, then the
 * current one; a side regenerated after the vote shows the answer the vote applied to, folded.
 * Sides in `live` are left to stream. Returns the current turn's result per side.
 */
export function fillBattlePanels(panels, view, live = []) {
  const shown = (panel, prompt, result) => {
    if (prompt !== null) panel.addUser(prompt);
    panel.startAnswer().finish(result);
    return result;
  };
  for (const turn of view.earlier_turns) {
    for (const side of ["a", "b"]) shown(panels[side], turn.prompt, { status: "done", text: turn.answers[side] });
  }
  const results = {};
  for (const side of ["a", "b"]) {
    if (live.includes(side)) continue;
    const sv = view.sides[side];
    const voted = view.voted_answers ? view.voted_answers[side] : undefined;
    let prompt = view.prompt;
    if (voted !== undefined && (view.regenerated || {})[side]) {
      shown(panels[side], prompt, { status: "done", text: voted });
      panels[side].foldLastAnswer("Answer voted on");
      prompt = null;
    }
    // A side cut by the reload was stopped by it: the gateway kept what it said.
    results[side] = shown(panels[side], prompt, {
      status: sv.status === "streaming" || sv.status === "pending" ? "stopped" : sv.status,
      text: sv.answer, error: sv.error, finishReason: sv.finish_reason });
  }
  return results;
}

/** The share link, absolute, ready to copy. */
export function showShareLink(el, path) {
  const url = new URL(path, location.origin).href;
  el.replaceChildren("Read-only link: ", h("a", { href: url, class: "share-url", text: url }));
}
