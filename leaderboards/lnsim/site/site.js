/* membench report: sortable tables and tooltips. Plain JavaScript, no library and no
   network: the pages work from file:// and offline. */
(function () {
  "use strict";

  /* ---- sortable tables: a click on a column's header button sorts the body rows by the
     cells' data-sort values (numbers numerically, text alphabetically); empty values (no
     measurement) stay last in both directions; equal values keep the page's order. */
  function value(row, col) {
    var cell = row.cells[col];
    if (!cell) return "";
    var v = cell.getAttribute("data-sort");
    return v === null ? cell.textContent.trim() : v;
  }
  function isNumber(v) { return v !== "" && isFinite(Number(v)); }
  function order(a, b, ascending) {
    if (a === "" || b === "") return (a === "") - (b === "");
    var c = isNumber(a) && isNumber(b) ? Number(a) - Number(b) : a.localeCompare(b);
    return ascending ? c : -c;
  }
  function sortBy(table, th, col) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { if (!r.hasAttribute("data-index")) r.setAttribute("data-index", i); });
    rows.sort(function (r1, r2) {
      return order(value(r1, col), value(r2, col), ascending) ||
        Number(r1.getAttribute("data-index")) - Number(r2.getAttribute("data-index"));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      var button = th.querySelector("button");
      if (button) button.addEventListener("click", function () { sortBy(table, th, col); });
    });
  });

  /* ---- tooltips: any element with data-tip (chart points, lines, heat-map cells) shows
     its text on hover or keyboard focus. */
  var tip = document.getElementById("tip");
  if (!tip) return;
  function show(el, x, y) {
    tip.textContent = el.getAttribute("data-tip");
    tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    var left = Math.min(x + 14, window.scrollX + document.documentElement.clientWidth - w - 4);
    var top = y + 14 + h > window.scrollY + document.documentElement.clientHeight ? y - h - 10 : y + 14;
    tip.style.left = Math.max(window.scrollX + 4, left) + "px";
    tip.style.top = Math.max(window.scrollY + 4, top) + "px";
  }
  function hide() { tip.hidden = true; }
  document.addEventListener("mouseover", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (el) show(el, e.pageX, e.pageY); else hide();
  });
  document.addEventListener("mousemove", function (e) {
    if (!tip.hidden) show(e.target.closest("[data-tip]") || tip, e.pageX, e.pageY);
  });
  document.addEventListener("focusin", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (!el) return hide();
    var box = el.getBoundingClientRect();
    show(el, box.right + window.scrollX, box.top + window.scrollY);
  });
  document.addEventListener("focusout", hide);
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") hide(); });
})();
