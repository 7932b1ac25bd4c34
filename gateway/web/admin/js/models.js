// Models: add one from the hub (check, then download with live progress, cancel), the catalogue
// with its runtime overlay, per-model settings, and the effective catalogue as YAML.
import { $, adminKey, api, AuthError, authHeaders, h, initAdmin, modelLabel } from "./common.js";
import { errorMessage } from "/static/arena/js/stream.js";

const POLL_MS = 400;
let choice = null;       // the last checked repository and quantisation
let editing = null;      // the model whose settings are shown
let polling = null;

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function fail(where, error) {
  if (error instanceof AuthError) return;
  $(where).textContent = error.message;
  $(where).hidden = false;
}

// -- adding a model ---------------------------------------------------------------------------

$("inspect-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("add-error").hidden = true;
  $("choice").hidden = true;
  try {
    choice = await api("/api/admin/models/inspect", { method: "POST",
      body: { repo: $("hub-repo").value.trim(), quant: $("hub-quant").value.trim() } });
  } catch (e) { fail("add-error", e); return; }
  $("choice-files").tBodies[0].replaceChildren(...choice.files.map((f) => h("tr", {},
    h("td", { class: "left", text: f.path }), h("td", { text: bytes(f.size) }),
    h("td", { class: "left sha", text: f.sha256 || "not given by the hub" }))));
  $("choice-size").textContent = choice.fits
    ? `${choice.source}: ${bytes(choice.total_size)} in ${choice.files.length} file(s), within the limit of ${bytes(choice.max_download_bytes)}.`
    : `${choice.source}: ${bytes(choice.total_size)}, above the gateway's limit of ${bytes(choice.max_download_bytes)}: it cannot be downloaded here.`;
  $("choice-size").classList.toggle("error", !choice.fits);
  $("download-button").disabled = !choice.fits;
  $("new-key").value = choice.suggested_key;
  $("new-name").value = "";
  $("choice").hidden = false;
});

$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!choice) return;
  $("add-error").hidden = true;
  const body = { repo: choice.repo, quant: choice.quant, key: $("new-key").value.trim() };
  if ($("new-name").value.trim()) body.display_name = $("new-name").value.trim();
  try {
    await api("/api/admin/models", { method: "POST", body });
    $("choice").hidden = true;
    await loadDownloads();
  } catch (e) { fail("add-error", e); }
});

// -- downloads --------------------------------------------------------------------------------

function downloadRow(d) {
  const active = d.state === "downloading" || d.state === "verifying";
  const percent = Math.floor(d.progress * 100);
  const cancel = active ? h("button", { type: "button", class: "danger", text: "Cancel", onclick: async () => {
    try { await api(`/api/admin/downloads/${encodeURIComponent(d.id)}`, { method: "DELETE" }); await loadDownloads(); }
    catch (e) { fail("add-error", e); }
  } }) : null;
  const state = h("span", { class: `badge ${d.state === "done" ? "done" : d.state === "failed" ? "error" : ""}`, text: d.state });
  return h("tr", { "data-download": d.id, "data-model": d.model, "data-state": d.state },
    h("td", { class: "left", text: d.model }), h("td", { class: "left", text: d.source }),
    h("td", {}, h("progress", { max: "100", value: String(percent), "aria-label": `Download of ${d.model}` }),
      h("span", { class: "percent", text: ` ${percent}%` })),
    h("td", { class: "bytes", text: `${bytes(d.bytes_done)} / ${bytes(d.bytes_total)}` }),
    h("td", {}, state, d.error ? h("div", { class: "notice error", text: d.error }) : null),
    h("td", {}, cancel));
}

async function loadDownloads() {
  let list;
  try { list = await api("/api/admin/downloads"); } catch (e) { fail("add-error", e); return; }
  $("download-limit").textContent = bytes(list.max_download_bytes);
  const body = $("downloads-table").tBodies[0];
  body.replaceChildren(...list.data.map(downloadRow));
  if (!list.data.length) body.append(h("tr", {}, h("td", { colspan: "6", class: "left", text: "No download yet." })));
  const active = list.data.some((d) => d.state === "downloading" || d.state === "verifying");
  const finished = body.dataset.active === "true" && !active;
  body.dataset.active = String(active);
  if (active && polling === null) polling = setInterval(loadDownloads, POLL_MS);
  if (!active && polling !== null) { clearInterval(polling); polling = null; }
  if (finished || !body.dataset.loaded) { body.dataset.loaded = "true"; await loadModels(); }
}

// -- the catalogue ----------------------------------------------------------------------------

function modelRow(m, restartNeeded) {
  const changed = Object.keys(m.overrides).length > 0;
  const origin = m.runtime ? "runtime" : changed ? "changed" : "file";
  const edit = h("button", { type: "button", text: "Settings", onclick: () => openSettings(m, restartNeeded) });
  const remove = m.runtime ? h("button", { type: "button", class: "danger", text: "Remove", onclick: async () => {
    $("models-error").hidden = true;
    try { await api(`/api/admin/models/${encodeURIComponent(m.id)}`, { method: "DELETE" }); await loadModels(); }
    catch (e) { fail("models-error", e); }
  } }) : null;
  const s = m.settings;
  return h("tr", { "data-model": m.id },
    h("td", { class: "left", text: modelLabel(m.display_name, m.id) }), h("td", { class: "left", text: m.source }),
    h("td", { text: String(s.n_ctx) }), h("td", { text: String(s.parallel) }),
    h("td", { text: `${s.default_max_tokens} / ${s.max_tokens_limit}` }), h("td", { text: String(s.battle_weight) }),
    h("td", {}, h("span", { class: `badge ${origin === "file" ? "" : "done"}`, text: origin })),
    h("td", {}, edit, " ", remove));
}

async function loadModels() {
  let list;
  try { list = await api("/api/admin/models"); } catch (e) { fail("models-error", e); return; }
  $("models-table").tBodies[0].replaceChildren(...list.data.map((m) => modelRow(m, list.restart_needed)));
  const left = Object.entries(list.left_out || {});
  $("restart-note").hidden = !left.length;
  $("restart-note").textContent = left.length
    ? `Left out of the overlay (no longer valid against the catalogue file): ${left.map(([k, why]) => `${k}: ${why}`).join("; ")}`
    : "";
  if (editing) {
    const fresh = list.data.find((m) => m.id === editing.id);
    if (fresh) fillSettings(fresh); else closeSettings();
  }
}

function fillSettings(model) {
  editing = model;
  $("settings-model").textContent = modelLabel(model.display_name, model.id);
  for (const input of $("settings-form").querySelectorAll("input[name]")) {
    const [group, field] = input.name.split(".");
    const value = field ? model.settings[group][field] : model.settings[group];
    input.value = value === undefined || value === null ? "" : String(value);
  }
  $("settings-reset").hidden = model.runtime;
  $("settings-reset").disabled = !Object.keys(model.overrides).length;
}

function openSettings(model) {
  $("settings-result").hidden = true;
  $("settings-error").hidden = true;
  fillSettings(model);
  $("settings-card").hidden = false;
  $("settings-card").scrollIntoView({ block: "nearest" });
}

function closeSettings() {
  editing = null;
  $("settings-card").hidden = true;
}

function restartMessage(restart) {
  if (restart === "needed") return "Saved. Restart this model's instances to apply it (this gateway does not restart them by itself yet).";
  if (restart === "rolling") return "Saved; the model's instances are restarted one at a time to apply it.";
  return "Saved and applied.";
}

async function saveSettings(body, method = "PATCH") {
  $("settings-error").hidden = true;
  $("settings-result").hidden = true;
  try {
    const result = await api(`/api/admin/models/${encodeURIComponent(editing.id)}/settings`,
      method === "PATCH" ? { method, body } : { method });
    $("settings-result").textContent = restartMessage(result.restart);
    $("settings-result").hidden = false;
    await loadModels();
  } catch (e) { fail("settings-error", e); }
}

$("settings-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { sampling: {} };
  for (const input of $("settings-form").querySelectorAll("input[name]")) {
    const [group, field] = input.name.split(".");
    const value = input.value.trim() === "" ? null : Number(input.value);
    if (field) body.sampling[field] = value;      // empty: back to the service's default
    else if (value !== null) body[group] = value;
  }
  await saveSettings(body);
});
$("settings-reset").addEventListener("click", () => saveSettings(null, "DELETE"));
$("settings-close").addEventListener("click", closeSettings);

// -- export -----------------------------------------------------------------------------------

$("export-button").addEventListener("click", async () => {
  if (!adminKey()) return;
  const response = await fetch("/api/admin/catalogue.yaml", { headers: authHeaders() });
  if (!response.ok) { fail("models-error", new Error(await errorMessage(response))); return; }
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: "catalogue.yaml" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
});

// The progress polling stops on logout (no request without a key) and resumes with a login.
window.addEventListener("admin-logout", () => { clearInterval(polling); polling = null; });
initAdmin(loadDownloads);
