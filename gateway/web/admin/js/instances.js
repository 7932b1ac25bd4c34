// Instances: each model with its instances and their states (loading -> ready -> draining -> gone),
// start / stop / rolling restart, refreshed every second.
import { $, api, AuthError, h, initAdmin, modelLabel } from "./common.js";

const REFRESH_MS = 1000;
const STATE_BADGE = { ready: "badge done", loading: "badge streaming", draining: "badge", unhealthy: "badge error", gone: "badge" };

function fail(error) {
  if (error instanceof AuthError) return;
  $("instances-error").textContent = error.message;
  $("instances-error").hidden = false;
}

async function act(path, options) {
  $("instances-error").hidden = true;
  try { await api(path, options); await refresh(); } catch (e) { fail(e); }
}

function button(text, label, onclick, extra = {}) {
  return h("button", { type: "button", text, "aria-label": label, onclick, ...extra });
}

function instanceRow(inst, enabled) {
  const stop = !enabled || inst.state === "gone" || inst.state === "draining" ? null
    : button("Stop", `Stop ${inst.instance_id}`, () => act(`/api/admin/instances/${encodeURIComponent(inst.instance_id)}`, { method: "DELETE" }),
             { class: "danger" });
  return h("tr", { "data-instance": inst.instance_id, "data-state": inst.state },
    h("td", { class: "left", text: inst.instance_id }),
    h("td", {}, h("span", { class: `state ${STATE_BADGE[inst.state] || "badge"}`, text: inst.state }),
      // Why it is not ready (a model it could not load, a failed probe), in the instance's words.
      inst.last_error && inst.state !== "ready" && inst.state !== "gone"
        ? h("div", { class: "notice error why", role: "status", text: inst.last_error }) : null,
      // A fleet-up runner asked to drain alone hears it at its next heartbeat.
      inst.drain_requested && inst.state === "draining"
        ? h("div", { class: "notice drain-request", role: "status", text: inst.drain_heard
          ? "Drain requested: its runner was told at its heartbeat; it finishes its requests, then goes."
          : "Drain requested: waiting for its runner's next heartbeat." }) : null),
    h("td", { class: "left", text: inst.url || "" }),
    h("td", { text: inst.source }),
    h("td", { text: inst.state === "gone" ? "–" : String(inst.active ?? 0) }),  // a gone one's last probe is stale
    h("td", { text: String(inst.requests_total) }),
    h("td", { text: new Date(inst.state_since * 1000).toLocaleTimeString() }),
    h("td", {}, stop));
}

function modelCard(model, enabled) {
  const restart = model.rolling_restart;
  const live = model.instances.filter((i) => i.state !== "gone").length;
  const controls = h("div", { class: "form-row" },
    button("Start an instance", `Start an instance of ${model.key}`, () => act("/api/admin/instances", { method: "POST", body: { model: model.key } }),
           { class: "primary", disabled: !enabled }),
    button("Rolling restart", `Rolling restart of ${model.key}`, () => act("/api/admin/instances/restart", { method: "POST", body: { model: model.key } }),
           { disabled: !enabled || !live || (restart && restart.state === "running") }));
  const rows = model.instances.map((inst) => instanceRow(inst, enabled));
  for (const d of model.dispatches) {
    rows.push(h("tr", { "data-dispatch": String(d.run_id || d.at) },
      h("td", { class: "left" }, d.html_url ? h("a", { href: d.html_url, text: "workflow run", rel: "noopener" }) : "workflow run"),
      h("td", {}, h("span", { class: "badge streaming", text: "dispatched" })),
      h("td", { class: "left", colspan: "6", text: "waiting for its runner to register" })));
  }
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: "8", class: "left", text: "No instances." })));
  const status = restart ? h("p", { class: restart.state === "failed" ? "notice error rolling" : "notice rolling", role: "status",
    text: `Rolling restart ${restart.state}: ${restart.replaced}/${restart.total} replaced${restart.message ? ` (${restart.message})` : ""}.` }) : null;
  return h("section", { class: "card", "data-model": model.key, "aria-label": model.display_name },
    h("h2", { text: modelLabel(model.display_name, model.key) }), controls, status,
    h("div", { class: "table-scroll" }, h("table", { class: "data" },
      h("thead", {}, h("tr", {}, ...["Instance", "State", "URL", "Source", "Active", "Requests", "Since", ""].map(
        (t, i) => h("th", { class: i === 0 || i === 2 ? "left" : "", text: t })))),
      h("tbody", {}, ...rows))));
}

let shown = "";

async function refresh() {
  const view = await api("/api/admin/instances");
  // Redraw only on a change, so focus and a pending click survive the refresh.
  const seen = JSON.stringify(view, (k, v) => (k === "seconds_in_state" || k === "last_probe_at" || k === "last_probe_latency_ms" ? undefined : v));
  if (seen === shown) return;
  shown = seen;
  const fleet = view.fleet;
  $("fleet-off").hidden = Boolean(fleet.kind);
  $("fleet-off").textContent = fleet.message || "";
  $("fleet-kind").replaceChildren(...(fleet.kind === "local" ? ["Fleet: the local fleet (", h("code", { text: "arena up" }), ")."]
    : fleet.kind === "actions" ? [`Fleet: GitHub Actions, ${fleet.repository} (${fleet.workflow}).`] : []));
  // Keep the models in use off the top; the rest follow.
  const models = view.data.slice().sort((a, b) => (b.instances.length > 0) - (a.instances.length > 0));
  $("models").replaceChildren(...models.map((m) => modelCard(m, Boolean(fleet.kind))));
}

// Refreshed while logged in: stopped on logout or a refused key (no request without a key),
// started again on a login. A loop belongs to one login (`generation`): one runs at a time.
let timer = null;
let generation = 0;

async function loop(mine) {
  try { await refresh(); } catch (e) { fail(e); }
  if (mine === generation) timer = setTimeout(() => loop(mine), REFRESH_MS);
}

function stopRefresh() {
  generation += 1;
  clearTimeout(timer);
}

function startRefresh() {
  stopRefresh();
  shown = "";  // redrawn in full: the fleet may have changed while logged out
  loop(generation);
}

window.addEventListener("admin-logout", stopRefresh);
initAdmin(startRefresh);
