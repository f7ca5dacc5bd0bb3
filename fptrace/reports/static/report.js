// fptrace report: draw the figures from their JSON blocks; sortable, filterable tables.
// No network: plotly.js is inlined above this script.
(function () {
  "use strict";
  function drawFigures() {
    document.querySelectorAll("script[type='application/json'][data-figure]").forEach(function (block) {
      var spec = JSON.parse(block.textContent);
      var target = document.getElementById(block.getAttribute("data-figure"));
      Plotly.newPlot(target, spec.data, spec.layout, { displaylogo: false, responsive: true })
        .then(function () { target.setAttribute("data-drawn", "1"); });
    });
  }
  function sortTable(table, col, numeric) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var th = table.tHead.rows[0].cells[col];
    var asc = th.getAttribute("data-dir") !== "asc";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("data-dir"); });
    th.setAttribute("data-dir", asc ? "asc" : "desc");
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute("data-sort"), y = b.cells[col].getAttribute("data-sort");
      if (numeric) {
        x = x === "" ? -Infinity : parseFloat(x);
        y = y === "" ? -Infinity : parseFloat(y);
        return asc ? x - y : y - x;
      }
      return asc ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  function wireTables() {
    document.querySelectorAll("table.data").forEach(function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
        th.addEventListener("click", function () {
          sortTable(table, i, th.getAttribute("data-kind") !== "text");
        });
      });
      var input = document.querySelector("input[data-filter='" + table.id + "']");
      if (input) {
        input.addEventListener("input", function () {
          var q = input.value.toLowerCase();
          Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
            r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none";
          });
        });
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    wireTables();
    drawFigures();
  });
})();
