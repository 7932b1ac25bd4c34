// The modes pages: discussion, council, roundtable. One page, the mode from the URL
// (/modes/<mode>); a stored session opens with ?t=<id> and replays its events.
import { initThemeToggle } from "./theme-toggle.js";
import { sseData, errorMessage } from "./stream.js";
import { SessionView } from "./modes-view.js";

const MODE = location.pathname.split("/").filter(Boolean)[1] || "discussion";
const INTRO = {
  discussion: ["Discussion", "An orchestrator weighs each participant's expertise for the question; they speak in turns, most expert first, each reading the discussion so far; after each round the orchestrator judges whether the answer is complete; then it writes one final answer."],
  council: ["Council", "Every participant answers at once; then each ranks the others' answers without knowing whose they are; a chairman writes the final answer with the rankings in view."],
  roundtable: ["Roundtable", "Every participant answers at once, then revises its answer after reading the others', round after round. The chart shows how far their answers converge."],
};
const DEFAULT_COUNT = { discussion: 2, council: 3, roundtable: 3 };

const $ = (id) => document.getElementById(id);
let options = null;
let controller = null;
let view = null;

function setRunning(running) {
  $("start").disabled = running;
  $("stop").disabled = !running;
  for (const el of $("mode-form").querySelectorAll("select, input, #add-participant, .remove")) el.disabled = running;
}

function participantRow(model) {
  const li = document.createElement("li");
  const select = document.createElement("select");
  select.className = "participant";
  select.setAttribute("aria-label", "Participant model");
  for (const m of options.models) select.append(new Option(m.display_name, m.id, false, m.id === model));
  const about = document.createElement("small");
  const describe = () => {
    const m = options.models.find((x) => x.id === select.value);
    about.textContent = m && m.profile ? m.profile.description : "";
  };
  select.addEventListener("change", () => { describe(); refreshChairs(); });
  describe();
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "remove";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", "Remove participant");
  remove.addEventListener("click", () => { li.remove(); refreshParticipants(); });
  li.append(select, about, remove);
  return li;
}

function refreshParticipants() {
  const [min, max] = options.limits.participants;
  const rows = $("participant-list").children.length;
  $("add-participant").disabled = rows >= max;
  for (const b of $("participant-list").querySelectorAll(".remove")) b.disabled = rows <= min;
  $("participants-hint").textContent = `${min} to ${max}; a model may take part more than once`;
  refreshChairs();
}

function refreshChairs() {
  const chair = $("chairman");
  const keep = chair.value;
  chair.replaceChildren(new Option("Best-ranked participant", ""));
  [...$("participant-list").querySelectorAll("select")].forEach((s, i) =>
    chair.append(new Option(`p${i + 1}: ${s.options[s.selectedIndex]?.text ?? s.value}`, `p${i + 1}`)));
  chair.append(new Option("The orchestrator", "orchestrator"));
  chair.value = [...chair.options].some((o) => o.value === keep) ? keep : "";
}

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function loadOptions() {
  const response = await fetch("/api/modes/options", { headers: headers() });
  if (!response.ok) throw new Error(await errorMessage(response));
  options = await response.json();
  $("rounds").max = options.limits.max_rounds;
  $("max-tokens").max = options.limits.max_tokens_per_turn;
  const orch = $("orchestrator");
  for (const o of options.orchestrators) orch.append(new Option(o.name, o.id));
  if (options.default_orchestrator) orch.value = options.default_orchestrator;
  const list = $("participant-list");
  const ids = options.models.map((m) => m.id);
  for (let i = 0; i < DEFAULT_COUNT[MODE] && ids.length; i++) list.append(participantRow(ids[i % ids.length]));
  refreshParticipants();
  if (!ids.length) $("status").textContent = "No model is ready right now.";
}

function requestBody() {
  const body = {
    question: $("question").value.trim(),
    participants: [...$("participant-list").querySelectorAll("select")].map((s) => s.value),
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
  };
  if (MODE !== "council") body.rounds = Number($("rounds").value);
  if (MODE !== "roundtable" && $("orchestrator").value) body.orchestrator = $("orchestrator").value;
  if (MODE === "council" && $("chairman").value) body.chairman = $("chairman").value;
  return body;
}

async function start() {
  const body = requestBody();
  if (!body.question) { $("question").focus(); return; }
  view.reset(body.question);
  controller = new AbortController();
  setRunning(true);
  view.status("Starting…");
  try {
    const response = await fetch(`/api/modes/${MODE}`, {
      method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...headers() },
      body: JSON.stringify(body),
    });
    if (!response.ok) { view.fail(await errorMessage(response)); return; }
    const id = response.headers.get("X-Arena-Session");
    if (id) view.links(MODE, id);
    let ended = false;
    for await (const data of sseData(response)) {
      let event;
      try { event = JSON.parse(data); } catch (_) { continue; }
      view.handle(event);
      if (event.type === "done") ended = true;
    }
    if (!ended) view.fail("The connection ended before the session finished.");
  } catch (e) {
    if (e && e.name === "AbortError") view.stopped();
    else view.fail(`Connection lost: ${e && e.message}`);
  } finally {
    controller = null;
    setRunning(false);
  }
}

async function openStored(id) {
  const response = await fetch(`/api/modes/transcripts/${encodeURIComponent(id)}`, { headers: headers() });
  if (!response.ok) { view.fail(await errorMessage(response)); return; }
  const transcript = await response.json();
  $("question").value = transcript.question;
  view.replay(transcript);
  view.links(transcript.mode, transcript.id);
}

function init() {
  const [title, intro] = INTRO[MODE] || INTRO.discussion;
  document.title = `${title} · LLM Arena`;
  $("mode-title").textContent = title;
  $("mode-intro").textContent = intro;
  $("orchestrator-label").textContent = MODE === "council" ? "Orchestrator (if chairman)" : "Orchestrator";
  for (const a of document.querySelectorAll("[data-mode-link]")) {
    if (a.dataset.modeLink === MODE) a.setAttribute("aria-current", "page");
  }
  for (const el of document.querySelectorAll("[data-for-modes]")) el.hidden = !el.dataset.forModes.split(" ").includes(MODE);
  initThemeToggle($("theme-toggle"));
  view = new SessionView(document, MODE);

  $("mode-form").addEventListener("submit", (e) => { e.preventDefault(); start(); });
  $("question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); if (!controller) start(); }
  });
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("add-participant").addEventListener("click", () => {
    $("participant-list").append(participantRow(options.models[0]?.id));
    refreshParticipants();
  });

  // The API key the arena's pages keep for this tab (sessionStorage, never a URL), and back.
  try { $("api-key").value = sessionStorage.getItem("arena-api-key") || ""; } catch (_) { /* storage refused */ }
  $("api-key").addEventListener("change", () => {
    try { sessionStorage.setItem("arena-api-key", $("api-key").value); } catch (_) { /* storage refused */ }
    if (!options) loadOptions().catch((e) => view.fail(`Could not load the models: ${e.message}`));
  });
  loadOptions().catch((e) => view.fail(`Could not load the models: ${e.message}`));
  const stored = new URLSearchParams(location.search).get("t");
  if (stored) openStored(stored).catch((e) => view.fail(`Could not load the session: ${e.message}`));
}

init();
