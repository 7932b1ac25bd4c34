// Runs before the page paints: apply the theme chosen with the toggle, if any; otherwise the
// stylesheet follows the system (prefers-color-scheme).
(function () {
  try {
    var chosen = localStorage.getItem("arena-theme");
    if (chosen === "light" || chosen === "dark") document.documentElement.dataset.theme = chosen;
  } catch (e) { /* storage may be off: follow the system */ }
})();
