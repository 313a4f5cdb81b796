/* fimp-bench site: sortable / filterable tables and the per-seed comparison scatter.
   Written for this site (no library, no network); generated pages load it from assets/. */
"use strict";

(function () {
  var SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name (an identifier, never loaded)

  function sortKey(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var v = parseFloat(raw);
    return isNaN(v) ? null : v;
  }

  function compare(a, b, numeric) {
    if (a === null && b === null) return 0;
    if (a === null) return 1; // missing values sort last in both directions
    if (b === null) return -1;
    if (numeric) return a - b;
    return a.localeCompare(b, undefined, { numeric: true });
  }

  function initSortable(table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, col) {
      th.tabIndex = 0;
      th.classList.add("sortable");
      th.title = "click to sort";
      function sort() {
        var numeric = th.getAttribute("data-sort-type") === "num";
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
          return { row: row, key: sortKey(row.cells[col], numeric), i: i };
        });
        rows.sort(function (x, y) {
          if (x.key === null || y.key === null) return compare(x.key, y.key, numeric) || x.i - y.i;
          var c = compare(x.key, y.key, numeric);
          return (asc ? c : -c) || x.i - y.i;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  }

  function initFilters(form, table) {
    var selects = form.querySelectorAll("select[data-filter]");
    var text = form.querySelector("[data-filter-text]");
    var count = document.getElementById("row-count");
    function apply() {
      var q = text ? text.value.trim().toLowerCase() : "";
      var rows = table.tBodies[0].rows, shown = 0;
      Array.prototype.forEach.call(rows, function (row) {
        var ok = Array.prototype.every.call(selects, function (s) {
          return !s.value || row.getAttribute("data-" + s.getAttribute("data-filter")) === s.value;
        });
        if (ok && q) ok = row.textContent.toLowerCase().indexOf(q) >= 0;
        row.hidden = !ok;
        if (ok) shown += 1;
      });
      if (count) count.textContent = shown + " of " + rows.length + " rows";
    }
    form.addEventListener("input", apply);
    form.addEventListener("change", apply);
    form.addEventListener("submit", function (e) { e.preventDefault(); });
    form.addEventListener("reset", function () { setTimeout(apply, 0); });
    apply();
  }

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) { return Number(v).toFixed(4); }

  function initCompare(data) {
    var selA = document.getElementById("model-a");
    var selB = document.getElementById("model-b");
    var selM = document.getElementById("metric");
    var box = document.getElementById("scatter");
    var summary = document.getElementById("compare-summary");
    var byId = {};
    data.models.forEach(function (m) { byId[m.id] = m; });

    function draw() {
      var a = byId[selA.value], b = byId[selB.value], metric = selM.value;
      var bSeeds = {};
      b.points.forEach(function (p) { if (metric in p[1]) bSeeds[p[0]] = p[1][metric]; });
      var pts = [];
      a.points.forEach(function (p) {
        if (metric in p[1] && p[0] in bSeeds) pts.push({ seed: p[0], x: p[1][metric], y: bSeeds[p[0]] });
      });
      var W = 440, H = 440, L = 70, R = 20, T = 20, B = 60;
      var svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
        "aria-label": "per-seed scatter" });
      var vals = [];
      pts.forEach(function (p) { vals.push(p.x, p.y); });
      var lo = vals.length ? Math.min.apply(null, vals) : 0;
      var hi = vals.length ? Math.max.apply(null, vals) : 1;
      if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
      var pad = (hi - lo) * 0.08;
      lo -= pad; hi += pad;
      function sx(v) { return L + (v - lo) / (hi - lo) * (W - L - R); }
      function sy(v) { return H - B - (v - lo) / (hi - lo) * (H - T - B); }
      svg.appendChild(el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }));
      for (var i = 0; i <= 4; i++) {
        var v = lo + (hi - lo) * i / 4;
        svg.appendChild(el("line", { x1: sx(v), x2: sx(v), y1: H - B, y2: H - B + 5, class: "tick" }));
        svg.appendChild(el("text", { x: sx(v), y: H - B + 18, "text-anchor": "middle", class: "tick-label" }, v.toFixed(3)));
        svg.appendChild(el("line", { x1: L - 5, x2: L, y1: sy(v), y2: sy(v), class: "tick" }));
        svg.appendChild(el("text", { x: L - 8, y: sy(v) + 4, "text-anchor": "end", class: "tick-label" }, v.toFixed(3)));
      }
      svg.appendChild(el("line", { x1: sx(lo), y1: sy(lo), x2: sx(hi), y2: sy(hi), class: "diag" }));
      var name = data.labels[metric] || metric;
      svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 15, "text-anchor": "middle", class: "axis-label" },
        "A: " + a.label + " (test " + name + ")"));
      svg.appendChild(el("text", { x: 16, y: (T + H - B) / 2, "text-anchor": "middle", class: "axis-label",
        transform: "rotate(-90 16 " + (T + H - B) / 2 + ")" }, "B: " + b.label + " (test " + name + ")"));
      var better = 0, dir = data.directions[metric] || 1;
      pts.forEach(function (p) {
        if ((p.y - p.x) * dir > 0) better += 1;
        var c = el("circle", { cx: sx(p.x), cy: sy(p.y), r: 5, class: "pt", "data-seed": p.seed });
        c.appendChild(el("title", {}, "seed " + p.seed + ": A " + fmt(p.x) + ", B " + fmt(p.y)));
        svg.appendChild(c);
      });
      box.replaceChildren(svg);
      summary.textContent = pts.length + " common seeds; B better than A on " + better + " of them (" +
        (dir > 0 ? "higher" : "lower") + " " + name + " is better).";
    }
    [selA, selB, selM].forEach(function (s) { s.addEventListener("change", draw); });
    draw();
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table[data-sortable]"), initSortable);
    var form = document.getElementById("filters");
    var board = document.querySelector("table[data-filterable]");
    if (form && board) initFilters(form, board);
    var data = document.getElementById("compare-data");
    if (data) initCompare(JSON.parse(data.textContent));
  });
})();
