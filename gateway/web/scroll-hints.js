// Tables that scroll sideways say so: while a .table-scroll box has columns out of view, a hint
// follows it ("scroll sideways") and the box takes the keyboard focus (arrow keys scroll it).
// The shadows on its edges are CSS alone. Loaded with `defer` on every page.
(function () {
  "use strict";
  var HINT = "Scroll sideways to see every column";
  var watched = new WeakSet();

  function update(box) {
    var more = box.scrollWidth - box.clientWidth > 1;
    var hint = box.nextElementSibling;
    var hasHint = hint && hint.classList.contains("scroll-hint");
    if (more && !hasHint) {
      hint = document.createElement("p");
      hint.className = "scroll-hint";
      hint.textContent = HINT;
      box.after(hint);
    } else if (!more && hasHint) {
      hint.remove();
    }
    box.toggleAttribute("data-more", more);
    if (more) box.tabIndex = 0; else box.removeAttribute("tabindex");
  }

  var resized = new ResizeObserver(function (entries) {
    entries.forEach(function (entry) { update(entry.target.closest(".table-scroll") || entry.target); });
  });

  function watch(root) {
    root.querySelectorAll(".table-scroll").forEach(function (box) {
      if (watched.has(box)) return;
      watched.add(box);
      resized.observe(box);
      // The table inside grows when a page's script fills it in.
      if (box.firstElementChild) resized.observe(box.firstElementChild);
      update(box);
    });
  }

  watch(document);
  // Pages add tables later (admin pages, the modes' result cards): look again once per frame at
  // most (an answer streaming in changes the page many times a second).
  var queued = false;
  new MutationObserver(function () {
    if (queued) return;
    queued = true;
    requestAnimationFrame(function () { queued = false; watch(document); });
  }).observe(document.body, { childList: true, subtree: true });
})();
