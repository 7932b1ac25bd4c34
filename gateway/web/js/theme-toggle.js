// The theme follows the system until the toggle picks one; the choice is remembered.
const media = window.matchMedia("(prefers-color-scheme: dark)");

export function effectiveTheme() {
  const chosen = document.documentElement.dataset.theme;
  return chosen === "light" || chosen === "dark" ? chosen : media.matches ? "dark" : "light";
}

export function initThemeToggle(button) {
  const label = () => {
    const next = effectiveTheme() === "dark" ? "light" : "dark";
    button.setAttribute("aria-label", `Switch to ${next} theme`);
    button.title = `Switch to ${next} theme`;
  };
  button.addEventListener("click", () => {
    const next = effectiveTheme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try { localStorage.setItem("arena-theme", next); } catch (_) { /* not remembered */ }
    label();
  });
  media.addEventListener("change", label);
  label();
}

/** The theme's colour of a CSS variable, resolved for a canvas (the variables hold light-dark() pairs). */
export function cssColor(name) {
  const probe = document.createElement("span");
  probe.hidden = true;
  probe.style.color = `var(${name})`;
  document.body.append(probe);
  const color = getComputedStyle(probe).color;
  probe.remove();
  return color;
}
