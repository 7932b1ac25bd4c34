// Battle mode: two anonymous models answer one prompt, and any follow-ups (up to the battle's
// turn limit), each in its own conversation; the vote covers the whole conversation and
// reveals who was who. The browser never learns a model's name, speed or token counts before
// the vote. The battle token from the gateway proves this page opened the battle: it goes with
// every stream, follow-up and vote (X-Battle-Token).
import { Panel, h } from "./panel.js";
import { errorMessage, streamCompletion } from "./stream.js";

const WINNER_TEXT = { model_a: "A is better", model_b: "B is better", tie: "a tie", both_bad: "both are bad" };

export class BattleMode {
  constructor({ panelsEl, voteBar, resultEl, settings, onBusyChange }) {
    this.panelsEl = panelsEl;
    this.voteBar = voteBar;
    this.resultEl = resultEl;
    this.settings = settings;
    this.onBusyChange = onBusyChange;
    this.battle = null;
    this.token = null;
    this.voted = false;
    this.sides = {};
    this.starting = false;
    for (const button of voteBar.querySelectorAll("button[data-winner]")) {
      button.addEventListener("click", () => this.vote(button.dataset.winner));
    }
    this.reset();
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
    return Boolean(this.battle) && !this.voted && results.length === 2
      && results.every((r) => r && (r.status === "done" || r.status === "stopped") && r.text.trim())
      && this.battle.turn < this.battle.max_turns;
  }

  sendLabel() {
    return this.canFollowUp() ? "Ask both" : "Battle";
  }

  headers(extra = {}) {
    const s = this.settings();
    return { ...extra, ...(s.apiKey ? { Authorization: `Bearer ${s.apiKey}` } : {}),
             ...(this.token ? { "X-Battle-Token": this.token } : {}) };
  }

  reset() {
    for (const s of Object.values(this.sides)) s.controller?.abort();
    this.battle = null;
    this.token = null;
    this.voted = false;
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
    let response;
    try {
      response = await fetch("/api/battles", {
        method: "POST",
        headers: this.headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ prompt, system: s.system, temperature: s.temperature, max_tokens: s.maxTokens }),
      });
    } catch (e) {
      response = null;
      this.resultEl.textContent = `Could not reach the gateway: ${e.message}`;
    }
    this.starting = false;
    if (response && !response.ok) this.resultEl.textContent = await errorMessage(response);
    if (!response || !response.ok) { this.onBusyChange(); return true; }
    this.battle = await response.json();
    this.token = this.battle.token;
    this.resultEl.textContent = "";
    await Promise.all(["a", "b"].map((side) => this.run(side, prompt, s)));
    return true;
  }

  async followUp(prompt) {
    const s = this.settings();
    this.starting = true;
    this.voteBar.hidden = true;
    this.onBusyChange();
    let response;
    try {
      response = await fetch(`/api/battles/${encodeURIComponent(this.battle.id)}/turns`, {
        method: "POST", headers: this.headers({ "Content-Type": "application/json" }), body: JSON.stringify({ prompt }),
      });
    } catch (e) {
      response = null;
      this.resultEl.textContent = `Could not reach the gateway: ${e.message}`;
    }
    this.starting = false;
    if (response && !response.ok) this.resultEl.textContent = await errorMessage(response);
    if (!response || !response.ok) { this.voteBar.hidden = false; this.onBusyChange(); return true; }
    this.battle = { ...(await response.json()), token: this.token };
    this.resultEl.textContent = "";
    for (const side of Object.values(this.sides)) side.result = null;
    await Promise.all(["a", "b"].map((side) => this.run(side, prompt, s)));
    return true;
  }

  async run(side, prompt, s) {
    const state = this.sides[side];
    const controller = new AbortController();
    state.controller = controller;
    state.panel.addUser(prompt);
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
    if (Object.values(this.sides).every((x) => x.result)) this.offerVote();
  }

  offerVote() {
    const results = Object.values(this.sides).map((x) => x.result);
    if (!results.every((r) => (r.status === "done" || r.status === "stopped") && r.text.trim())) {
      // A side that failed or said nothing is not a contest: nothing to vote on.
      this.voteBar.hidden = true;
      this.resultEl.textContent = "A side gave no answer, so this battle cannot be voted on. "
        + "Send a prompt to start a new battle.";
      this.battle = null;
      this.onBusyChange();
      return;
    }
    this.voteBar.hidden = false;
    this.setVoteButtons(true);
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
    for (const side of ["a", "b"]) {
      const who = body.revealed[side];
      const panel = this.sides[side].panel;
      panel.setTitle(`Model ${side.toUpperCase()}: ${who.display_name}`, who.model);
      panel.el.classList.add("revealed");
      panel.el.dataset.model = who.model;
      panel.reveal({ ttft: who.ttft, total: who.total, tokens: who.tokens, tps: who.tokens_per_second });
    }
    this.resultEl.replaceChildren(
      `You voted ${WINNER_TEXT[winner]}. Model A was ${body.revealed.a.display_name}, Model B was ${body.revealed.b.display_name}. `,
      body.counted ? "" : h("span", { class: "flag-note", text: "An answer named a model, so this vote is recorded but not counted. " }),
      h("a", { href: "/leaderboard", text: "See the leaderboard" }), " or type a new prompt for the next battle.");
  }
}
