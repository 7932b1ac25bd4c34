// Pages with no script of their own (/status, /leaderboard/method): just the theme toggle.
import { initThemeToggle } from "./theme-toggle.js";

initThemeToggle(document.getElementById("theme-toggle"));
