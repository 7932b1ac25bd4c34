// The admin pages' login: the admin key is kept in this tab's sessionStorage (never in a URL,
// never logged) and sent as "Authorization: Bearer" to /api/admin/*.
import { h } from "/static/arena/js/panel.js";
import { errorMessage } from "/static/arena/js/stream.js";
import { initThemeToggle } from "/static/arena/js/theme-toggle.js";

export { h };
const STORAGE = "arena-admin-key";
export const $ = (id) => document.getElementById(id);

export function adminKey() {
  try { return sessionStorage.getItem(STORAGE); } catch (_) { return null; }
}

export function authHeaders() {
  return { Authorization: `Bearer ${adminKey()}` };
}

export class AuthError extends Error {}

/** JSON from an admin API; throws with the server's message (AuthError on 401 or when logged out:
 * the login shows again). */
export async function api(path, { method = "GET", body } = {}) {
  if (!adminKey()) {
    // Logged out (or the key was refused): nothing is sent. A "Bearer null" would count as a
    // wrong key, and a page refreshing every second would get this client locked out (429).
    if ($("login").hidden) showLogin();
    throw new AuthError("Log in with the admin key.");
  }
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) {
    forget();
    showLogin("The admin key was refused; log in again.");
    throw new AuthError(await errorMessage(response));
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

/** Forget the key; pages stop what they refresh ("admin-logout"); a new login calls their `ready()` again. */
function forget() {
  try { sessionStorage.removeItem(STORAGE); } catch (_) { /* nothing kept */ }
  window.dispatchEvent(new Event("admin-logout"));
}

function show(which) {
  for (const id of ["admin-off", "login", "admin-main"]) $(id).hidden = id !== which;
  $("logout").hidden = which !== "admin-main";
}

function showLogin(message = "") {
  show("login");
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
  $("admin-key").focus();
}

/** Show the page once a valid admin key is known; `ready()` then loads its data, and again at each later login. */
export async function initAdmin(ready) {
  initThemeToggle($("theme-toggle"));
  $("logout").addEventListener("click", () => { forget(); showLogin(); });
  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("admin-key").value.trim();
    if (!key) return;
    let response;
    try {
      response = await fetch("/api/admin/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
      if (!response.ok) { showLogin(await errorMessage(response)); return; }
    } catch (e) { showLogin(`The gateway could not be reached (${e.message}); try again.`); return; }
    try { sessionStorage.setItem(STORAGE, key); } catch (_) { showLogin("This browser refuses session storage."); return; }
    $("admin-key").value = "";
    start();
  });
  const start = () => {
    show("admin-main");
    ready();
  };
  try {
    const enabled = await (await fetch("/api/admin/enabled")).json();
    if (!enabled.enabled) {
      show("admin-off");
      $("admin-off-message").textContent = enabled.message;
      return;
    }
    if (!adminKey()) { showLogin(); return; }
    const response = await fetch("/api/admin/session", { headers: authHeaders() });
    if (response.ok) start();
    else { forget(); showLogin(await errorMessage(response)); }
  } catch (e) {
    show("admin-off");
    $("admin-off-message").textContent = `The gateway could not be reached (${e.message}); reload the page to try again.`;
  }
}

/** "Name (key)", or the key alone when the model has no name of its own (a model added from the hub). */
export const modelLabel = (name, key) => (name && name !== key ? `${name} (${key})` : key);

export const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "never");

/** A <pre> with a copy button. */
export function codeBox(text) {
  const pre = h("pre", {}, h("code", { text }));
  const button = h("button", { type: "button", class: "copy-code", text: "Copy", onclick: async () => {
    try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; } catch (_) { button.textContent = "Select and copy"; }
  } });
  return h("div", { class: "code-box" }, pre, button);
}
