// The arena page: tabs, settings, composer and keyboard, theme toggle, the list of ready models.
import { BattleMode, showShareLink } from "./battle.js";
import { CompareMode } from "./compare.js";
import { errorMessage } from "./stream.js";
import { initThemeToggle } from "./theme-toggle.js";
import { checkContext } from "./tokens.js";

const $ = (id) => document.getElementById(id);
const MODELS_POLL_MS = 4000;

function readSettings() {
  const maxTokens = Math.max(1, Math.min(4096, parseInt($("max-tokens").value, 10) || 256));
  return {
    system: $("system-prompt").value.trim(),
    temperature: Math.max(0, Math.min(2, parseFloat($("temperature").value) || 0)),
    maxTokens,
    apiKey: $("api-key").value.trim(),
  };
}

function persistSettings() {
  const keep = { system: $("system-prompt").value, temperature: $("temperature").value, maxTokens: $("max-tokens").value };
  try {
    localStorage.setItem("arena-settings", JSON.stringify(keep));
    sessionStorage.setItem("arena-api-key", $("api-key").value);
  } catch (_) { /* storage refused: the settings last this page */ }
}

function restoreSettings() {
  try {
    const s = JSON.parse(localStorage.getItem("arena-settings") || "{}");
    if (typeof s.system === "string") $("system-prompt").value = s.system;
    if (s.temperature !== undefined) $("temperature").value = s.temperature;
    if (s.maxTokens !== undefined) $("max-tokens").value = s.maxTokens;
    $("api-key").value = sessionStorage.getItem("arena-api-key") || "";
  } catch (_) { /* defaults */ }
  $("temperature-value").textContent = $("temperature").value;
}

let mode = "compare";
const compare = new CompareMode({
  listEl: $("model-list"), statusEl: $("models-status"), panelsEl: $("compare-panels"), emptyEl: $("compare-empty"),
  settings: readSettings, onBusyChange: () => updateButtons(),
});
const battle = new BattleMode({
  panelsEl: $("battle-panels"), voteBar: $("vote-bar"), resultEl: $("battle-result"),
  afterVote: $("after-vote"), shareEl: $("battle-share"),
  settings: readSettings, onBusyChange: () => updateButtons(),
});
let readyModels = [];
const current = () => (mode === "battle" ? battle : compare);

function updateButtons() {
  const m = current();
  $("stop-all").disabled = !m.busy;
  $("send").disabled = !m.canSend();
  $("send").textContent = mode === "battle" ? battle.sendLabel() : "Send";
  $("compare-actions").hidden = compare.busy || !compare.snapshot().panels.length;
  updateEstimate();
}

// The prompt's estimated tokens (with the conversation so far and the answer's max tokens)
// against the smallest context it may meet: the chosen models in Compare, any battle model.
let confirmedOver = false;
function contextCheck() {
  const prompt = $("prompt").value;
  if (!prompt.trim()) return null;
  const s = readSettings();
  const models = mode === "battle" ? readyModels.filter((m) => m.battles !== false) : compare.targets();
  const soFar = mode === "battle" ? battle.conversationText() : compare.conversationText();
  return checkContext([s.system, soFar, prompt].filter(Boolean).join("\n"), s.maxTokens, models);
}

function updateEstimate(check = contextCheck()) {
  const el = $("token-estimate");
  el.hidden = !check;
  if (!check) return;
  const n = (x) => x.toLocaleString("en");
  el.classList.toggle("over", check.over);
  el.textContent = check.over
    ? `About ${n(check.tokens)} tokens + ${n(check.reserve)} to answer: more than ${check.model}'s context of ${n(check.context)} tokens. Shorten it, or lower max tokens.`
    : `About ${n(check.tokens)} tokens + ${n(check.reserve)} to answer, of ${n(check.context)} (${check.model}, the tightest fit).`;
  if (check.over && confirmedOver) el.textContent += " Send again to send it anyway.";
}

function setMode(next, { focus = false } = {}) {
  mode = next === "battle" ? "battle" : "compare";
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
    tab.tabIndex = tab.dataset.mode === mode ? 0 : -1;
  }
  $("compare-view").hidden = mode !== "compare";
  $("battle-view").hidden = mode !== "battle";
  // "#battle/<id>" names an open battle: keep it.
  const wanted = mode === "battle" ? (location.hash.startsWith("#battle") ? location.hash : "#battle") : "";
  if (location.hash !== wanted) history.replaceState(null, "", wanted || location.pathname);
  updateButtons();
  if (focus) $("prompt").focus();
}

async function send() {
  const prompt = $("prompt").value.trim();
  if (!prompt || !current().canSend()) return;
  const check = contextCheck();
  if (check && check.over && !confirmedOver) {  // warn first; a second Send sends it anyway
    confirmedOver = true;
    updateEstimate(check);
    return;
  }
  confirmedOver = false;
  persistSettings();
  const sent = current().send(prompt);
  if (sent !== false) {
    $("prompt").value = "";
    autoSize();
  }
  updateButtons();
  await sent;
}

function autoSize() {
  const t = $("prompt");
  t.style.height = "auto";
  t.style.height = `${Math.min(t.scrollHeight, 192)}px`;
}

async function pollModels() {
  try {
    const key = readSettings().apiKey; // the list takes the key when the gateway requires one
    const response = await fetch("/api/arena/models", { cache: "no-store", headers: key ? { Authorization: `Bearer ${key}` } : {} });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    readyModels = body.data;
    compare.setModels(body.data, body.answer_deadline);
  } catch (e) {
    compare.setModelsError(`cannot list models (${e.message}); retrying`);
  }
  updateButtons();
  setTimeout(pollModels, MODELS_POLL_MS);
}

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
$("prompt").addEventListener("input", () => { autoSize(); confirmedOver = false; updateEstimate(); });
$("max-tokens").addEventListener("input", () => updateEstimate());
$("share-compare").addEventListener("click", async () => {
  const s = readSettings();
  let response;
  try {
    response = await fetch("/api/shares", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(s.apiKey ? { Authorization: `Bearer ${s.apiKey}` } : {}) },
      body: JSON.stringify(compare.snapshot()),
    });
  } catch (e) {
    $("compare-share").textContent = `Could not reach the gateway: ${e.message}`;
    return;
  }
  if (!response.ok) $("compare-share").textContent = await errorMessage(response);
  else showShareLink($("compare-share"), (await response.json()).url);
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && current().busy) current().stopAll();
});
$("stop-all").addEventListener("click", () => current().stopAll());
$("reset").addEventListener("click", () => {
  if (mode === "battle") battle.abandon(); else { compare.reset(); $("compare-share").replaceChildren(); }
  updateButtons();
  $("prompt").focus();
});
$("temperature").addEventListener("input", () => { $("temperature-value").textContent = $("temperature").value; });
for (const id of ["system-prompt", "temperature", "max-tokens", "api-key"]) $(id).addEventListener("change", persistSettings);
for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
  tab.addEventListener("click", () => setMode(tab.dataset.mode, { focus: true }));
  tab.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      setMode(mode === "battle" ? "compare" : "battle");
      document.querySelector(`.tabs [data-mode=${mode}]`).focus();
    }
  });
}
window.addEventListener("hashchange", () => setMode(location.hash.startsWith("#battle") ? "battle" : "compare"));

// The composer sticks to the bottom; on a phone the vote bar sticks just above it.
new ResizeObserver(([entry]) => {
  document.documentElement.style.setProperty("--composer-height", `${Math.ceil(entry.borderBoxSize[0].blockSize)}px`);
}).observe($("composer"));

restoreSettings();
initThemeToggle($("theme-toggle"));
setMode(location.hash.startsWith("#battle") ? "battle" : "compare");
const openBattle = location.hash.match(/^#battle\/([A-Za-z0-9_-]+)$/);
if (openBattle) battle.restore(openBattle[1]).then(updateButtons);
pollModels();
document.documentElement.dataset.ready = "true";
