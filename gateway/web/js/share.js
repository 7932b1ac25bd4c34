// A shared battle (revealed) or compare conversation, read-only: no composer, no vote. The page
// is the server pages' shell (gateway/page_shell.py), whose theme-page.js runs the theme toggle.
import { fillBattlePanels } from "./battle.js";
import { Panel } from "./panel.js";
import { errorMessage } from "./stream.js";

const $ = (id) => document.getElementById(id);
const WINNER_TEXT = { model_a: "Model A was better", model_b: "Model B was better", tie: "it was a tie",
  both_bad: "both were bad" };

function showBattle(view) {
  const panels = {};
  for (const side of ["a", "b"]) {
    const who = view.revealed[side];
    panels[side] = new Panel({ key: side, title: `Model ${side.toUpperCase()}: ${who.display_name}`, subtitle: who.model });
    panels[side].el.classList.add("revealed");
    panels[side].el.dataset.model = who.model;
  }
  $("shared-panels").replaceChildren(panels.a.el, panels.b.el);
  fillBattlePanels(panels, view);
  for (const side of ["a", "b"]) {
    const who = view.revealed[side];
    panels[side].showStats({ ttft: who.ttft, total: who.total, tokens: who.tokens, tps: who.tokens_per_second });
  }
  $("shared-title").textContent = "A battle from the arena";
  $("shared-summary").textContent = `Two models answered blind; the vote said ${WINNER_TEXT[view.vote]}.`;
}

function showCompare(compare) {
  const panels = compare.panels.map((p) => {
    const panel = new Panel({ key: p.model, title: p.display_name, subtitle: p.model });
    $("shared-panels").append(panel.el);
    for (const m of p.messages) {
      if (m.role === "user") panel.addUser(m.content);
      else panel.startAnswer().finish({ status: "done", text: m.content });
    }
    return panel;
  });
  $("shared-title").textContent = "A comparison from the arena";
  $("shared-summary").textContent = `${panels.length} model${panels.length === 1 ? "" : "s"}, one conversation, `
    + "as the person who shared it saw it.";
}

async function load() {
  const id = decodeURIComponent(location.pathname.split("/").pop() || "");
  let response;
  try {
    response = await fetch(`/api/shares/${encodeURIComponent(id)}`);
  } catch (e) {
    $("shared-summary").textContent = `Could not reach the gateway: ${e.message}`;
    return;
  }
  if (!response.ok) {
    $("shared-summary").textContent = await errorMessage(response);
    return;
  }
  const share = await response.json();
  if (share.kind === "battle") showBattle(share.battle); else showCompare(share.compare);
}

load().finally(() => { document.documentElement.dataset.ready = "true"; });
