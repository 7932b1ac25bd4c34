// API keys: create (the secret shown once), list with use, set limits, revoke; and the audit log.
import { $, api, AuthError, codeBox, h, initAdmin, when } from "./common.js";

function fail(error) {
  if (error instanceof AuthError) return;
  $("keys-error").textContent = error.message;
  $("keys-error").hidden = false;
}

function hideSecret() {
  $("new-key").replaceChildren();
  $("new-key").hidden = true;
  delete $("new-key").dataset.key;
}

function limitCell(key) {
  if (!key.active) return h("td", { text: key.rpm === null ? "default" : String(key.rpm) });
  const input = h("input", { class: "rpm", type: "number", min: "0", max: "1000000", value: key.rpm ?? "",
                             placeholder: "default", "aria-label": `Limit of ${key.name}` });
  const save = h("button", { type: "button", text: "Set", onclick: async () => {
    const rpm = input.value === "" ? null : Number(input.value);
    try { await api(`/api/admin/keys/${encodeURIComponent(key.key_id)}`, { method: "PATCH", body: { rpm } }); await load(); }
    catch (e) { fail(e); }
  } });
  return h("td", {}, input, " ", save);
}

function row(key) {
  const revoke = key.active ? h("button", { type: "button", class: "danger", text: "Revoke", onclick: async () => {
    try {
      await api(`/api/admin/keys/${encodeURIComponent(key.key_id)}`, { method: "DELETE" });
      if ($("new-key").dataset.key === key.key_id) hideSecret();  // a revoked secret is not offered to copy
      await load();
    } catch (e) { fail(e); }
  } }) : null;
  return h("tr", { "data-key": key.key_id },
    h("td", { class: "left", text: key.key_id }), h("td", { text: key.name }), h("td", { text: `${key.prefix}…` }),
    limitCell(key), h("td", { class: "requests", text: String(key.requests) }), h("td", { text: when(key.last_used_at) }),
    h("td", { text: when(key.created_at) }),
    h("td", {}, h("span", { class: key.active ? "badge done" : "badge error", text: key.active ? "active" : "revoked" })),
    h("td", {}, revoke));
}

async function load() {
  $("keys-error").hidden = true;
  try {
    const [keys, audit] = await Promise.all([api("/api/admin/keys"), api("/api/admin/audit?limit=50")]);
    $("keys-table").tBodies[0].replaceChildren(...keys.data.slice().reverse().map(row));
    if (!keys.data.length) $("keys-table").tBodies[0].append(h("tr", {}, h("td", { colspan: "9", class: "left", text: "No keys yet." })));
    $("audit-table").tBodies[0].replaceChildren(...audit.data.map((e) => h("tr", {},
      h("td", { class: "left", text: when(e.at) }), h("td", { text: e.action }), h("td", { text: e.target }),
      h("td", { class: "actor", text: e.actor }), h("td", { class: "left", text: JSON.stringify(e.detail) }))));
  } catch (e) { fail(e); }
}

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const rpm = $("key-rpm").value === "" ? null : Number($("key-rpm").value);
  try {
    const key = await api("/api/admin/keys", { method: "POST", body: { name: $("key-name").value, rpm } });
    $("new-key").replaceChildren(
      h("strong", { text: `Key ${key.key_id} created. Copy the secret now: it is not shown again.` }),
      codeBox(key.key));
    $("new-key").querySelector("code").id = "new-secret";
    $("new-key").dataset.key = key.key_id;
    $("new-key").hidden = false;
    $("key-name").value = "";
    $("key-rpm").value = "";
    await load();
  } catch (e) { fail(e); }
});

// A secret shown once is not left in the page for whoever logs in next.
window.addEventListener("admin-logout", hideSecret);
initAdmin(load);
