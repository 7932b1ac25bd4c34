// Compare mode: the same conversation with each chosen model, every answer streaming into its
// own panel from the gateway's public /v1/chat/completions.
import { Panel, h } from "./panel.js";
import { streamCompletion } from "./stream.js";

const STORAGE_KEY = "arena-compare-models";

export class CompareMode {
  constructor({ listEl, statusEl, panelsEl, emptyEl, settings, onBusyChange }) {
    this.listEl = listEl;
    this.statusEl = statusEl;
    this.panelsEl = panelsEl;
    this.emptyEl = emptyEl;
    this.settings = settings;
    this.onBusyChange = onBusyChange;
    this.models = new Map(); // key -> {id, display_name}
    this.ready = new Set();
    this.chats = new Map(); // key -> {panel, history, controller}
    let stored = null;
    try { stored = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null"); } catch (_) { /* ignore */ }
    this.selected = new Set(Array.isArray(stored) ? stored : []);
    this.autoSelect = !Array.isArray(stored);
  }

  get busy() {
    return [...this.chats.values()].some((c) => c.controller);
  }

  /** New list of ready models from the gateway; `deadline`: the arena's answer deadline (s). */
  setModels(models, deadline = 0) {
    this.deadline = deadline;
    this.ready = new Set(models.map((m) => m.id));
    for (const m of models) this.models.set(m.id, m);
    if (this.autoSelect && models.length) {
      models.slice(0, 2).forEach((m) => this.selected.add(m.id));
      this.autoSelect = false;
    }
    this.renderList();
    this.syncPanels();
  }

  setModelsError(message) {
    this.statusEl.textContent = message;
  }

  renderList() {
    const keys = [...new Set([...this.ready, ...[...this.selected].filter((k) => this.models.has(k))])];
    this.statusEl.textContent = this.ready.size
      ? `${this.ready.size} ready · choose one or more`
      : "no model has a ready instance yet; the list updates by itself";
    const chips = keys.map((key) => {
      const m = this.models.get(key);
      const ready = this.ready.has(key);
      const input = h("input", { type: "checkbox", value: key, checked: this.selected.has(key), disabled: !ready,
        onchange: (e) => this.toggle(key, e.target.checked) });
      return h("label", { class: `chip${ready ? "" : " unready"}`, title: m.description || m.display_name,
        "data-model": key }, input, h("span", { text: m.display_name }), ready ? null : h("small", { text: "not ready" }));
    });
    // Keep focus on the chip being used across re-renders.
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest(".chip");
    const focusKey = focused ? focused.dataset.model : null;
    this.listEl.replaceChildren(...chips);
    if (focusKey) this.listEl.querySelector(`.chip[data-model="${CSS.escape(focusKey)}"] input`)?.focus();
  }

  toggle(key, on) {
    if (on) this.selected.add(key); else this.selected.delete(key);
    try { localStorage.setItem(STORAGE_KEY, JSON.stringify([...this.selected])); } catch (_) { /* storage refused: kept for this page only */ }
    this.syncPanels();
  }

  syncPanels() {
    for (const [key, chat] of this.chats) {
      if (!this.selected.has(key)) {
        chat.controller?.abort();
        chat.panel.el.remove();
        this.chats.delete(key);
      }
    }
    for (const key of this.selected) {
      if (this.chats.has(key) || !this.models.has(key)) continue;
      const m = this.models.get(key);
      const panel = new Panel({ key, title: m.display_name, subtitle: key, onStop: () => this.stop(key) });
      this.chats.set(key, { panel, history: [], controller: null });
    }
    // Panels in the order of the list.
    const order = [...this.listEl.querySelectorAll(".chip")].map((c) => c.dataset.model);
    const panels = order.filter((k) => this.chats.has(k)).map((k) => this.chats.get(k).panel.el);
    this.panelsEl.replaceChildren(...panels);
    // The explanation stays until the first prompt (two models are picked by themselves).
    this.emptyEl.hidden = this.started && panels.length > 0;
  }

  canSend() {
    return [...this.selected].some((k) => this.ready.has(k));
  }

  send(prompt) {
    const targets = [...this.selected].filter((k) => this.chats.has(k) && !this.chats.get(k).controller);
    if (!targets.length) return false;
    const s = this.settings();
    this.started = true;
    this.emptyEl.hidden = true;
    for (const key of targets) {
      const chat = this.chats.get(key);
      chat.history.push({ role: "user", content: prompt });
      chat.panel.addUser(prompt);
      if (!this.ready.has(key)) {
        chat.panel.note(`${this.models.get(key).display_name} has no ready instance right now.`, "error");
        chat.panel.setStatus("error");
        chat.history.pop();
        continue;
      }
      this.run(key, chat, s);
    }
    this.onBusyChange();
    return true;
  }

  async run(key, chat, s) {
    const controller = new AbortController();
    chat.controller = controller;
    const answer = chat.panel.startAnswer();
    const messages = [...(s.system ? [{ role: "system", content: s.system }] : []), ...chat.history];
    const headers = s.apiKey ? { Authorization: `Bearer ${s.apiKey}` } : {};
    // A model refuses max_tokens above its limit: ask for the limit instead, and say so.
    const limit = this.models.get(key)?.max_tokens_limit;
    const maxTokens = limit ? Math.min(s.maxTokens, limit) : s.maxTokens;
    if (maxTokens < s.maxTokens) {
      chat.panel.note(`Max tokens ${s.maxTokens} is above this model's limit: asked for ${limit}.`, "note clamped");
    }
    const result = await streamCompletion("/v1/chat/completions", {
      model: key, messages, stream: true, stream_options: { include_usage: true },
      temperature: s.temperature, max_tokens: maxTokens,
    }, {
      signal: controller.signal, headers, onText: answer.update, deadline: this.deadline,
      // The models list (polled) drops a model whose instances the gateway took out of service.
      gone: () => (this.ready.has(key) ? null
        : `${this.models.get(key)?.display_name || key} stopped responding: the gateway took it out of service.`),
    });
    answer.finish(result);
    // A stopped or failed answer stays in the conversation only if it said something.
    if (result.text) chat.history.push({ role: "assistant", content: result.text });
    else chat.history.pop();
    if (chat.controller === controller) chat.controller = null;
    this.onBusyChange();
  }

  stop(key) {
    this.chats.get(key)?.controller?.abort();
  }

  /** The chosen models that can answer now, with their context sizes (for the token estimate). */
  targets() {
    return [...this.selected].filter((k) => this.ready.has(k)).map((k) => this.models.get(k));
  }

  /** The longest conversation so far, as text (for the token estimate). */
  conversationText() {
    let longest = "";
    for (const chat of this.chats.values()) {
      const text = chat.history.map((m) => m.content).join("\n");
      if (text.length > longest.length) longest = text;
    }
    return longest;
  }

  /** What a share link needs: each panel's conversation (answers that said something). */
  snapshot() {
    const panels = [...this.chats.entries()]
      .filter(([, chat]) => chat.history.some((m) => m.role === "assistant"))
      .map(([model, chat]) => ({ model, messages: chat.history.map(({ role, content }) => ({ role, content })) }));
    return { system: this.settings().system, panels };
  }

  stopAll() {
    for (const key of this.chats.keys()) this.stop(key);
  }

  reset() {
    this.stopAll();
    this.started = false;
    this.emptyEl.hidden = false;
    for (const chat of this.chats.values()) {
      chat.history = [];
      chat.panel.clear();
    }
  }
}
