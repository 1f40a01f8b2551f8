// plausipy dashboard: draws the charts of one package from the summary JSON
// that the page carries in #summary-data. Inline SVG and plain DOM, no
// library and no network: the page works offline and behind strict CSPs.
(function () {
  "use strict";

  var SVG_NS = "http://www.w3.org/2000/svg";
  var MAX_ROWS = 10;
  var SERIES = [
    { key: "package", label: "package scope", color: "var(--series-package)" },
    { key: "user", label: "user scope", color: "var(--series-user)" },
  ];

  function element(name, attributes, text) {
    var node = document.createElement(name);
    setAttributes(node, attributes);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgElement(name, attributes, text) {
    var node = document.createElementNS(SVG_NS, name);
    setAttributes(node, attributes);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setAttributes(node, attributes) {
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
  }

  function formatCount(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(value >= 1e7 ? 0 : 1) + "M";
    if (value >= 1e4) return Math.round(value / 1e3) + "k";
    return value.toLocaleString("en");
  }

  function formatDuration(ms) {
    if (ms === null || ms === undefined) return null;
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    return (ms / 60000).toFixed(1) + " min";
  }

  function formatMemory(kib) {
    if (kib === null || kib === undefined) return null;
    if (kib < 1024) return Math.round(kib) + " KiB";
    if (kib < 1024 * 1024) return (kib / 1024).toFixed(kib < 10240 ? 1 : 0) + " MiB";
    return (kib / 1048576).toFixed(2) + " GiB";
  }

  function formatRate(rate) {
    return rate === null || rate === undefined ? null : (rate * 100).toFixed(1) + " %";
  }

  function suppressedLabel(k) {
    return element("span", { class: "suppressed", title: "fewer than " + k + " people: hidden" }, "< " + k);
  }

  // One value cell: the figure, or "< k" for a suppressed cell, or a dash when unknown.
  function valueCell(text, suppressed, k) {
    if (suppressed) return suppressedLabel(k);
    return element("span", {}, text === null ? "–" : text);
  }

  function niceMaximum(value) {
    if (value <= 0) return 1;
    var magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * magnitude >= value) return steps[i] * magnitude;
    }
    return 10 * magnitude;
  }

  // A day-by-day chart: bars (runs) or lines (IDs per scope), with "< k" days marked.
  function dayChart(container, days, options) {
    var width = 960, height = 220, left = 48, right = 12, top = 14, bottom = 28;
    var plotWidth = width - left - right, plotHeight = height - top - bottom;
    var maximum = 0;
    days.forEach(function (day) {
      options.series.forEach(function (series) {
        var value = series.valueOf(day);
        if (value !== null && value > maximum) maximum = value;
      });
    });
    maximum = niceMaximum(maximum);
    var svg = svgElement("svg", { viewBox: "0 0 " + width + " " + height, class: "day-chart", preserveAspectRatio: "none" });
    drawGrid(svg, maximum, { left: left, top: top, width: plotWidth, height: plotHeight });
    var step = plotWidth / Math.max(days.length, 1);
    drawDayLabels(svg, days, { left: left, step: step, y: height - 8 });
    options.series.forEach(function (series) {
      // A scope nobody used stays in the legend but draws no flat line at zero.
      if (days.every(function (day) { return series.valueOf(day) === 0; })) { series.empty = true; return; }
      if (options.kind === "bars") drawBars(svg, days, series, { left: left, top: top, step: step, height: plotHeight, maximum: maximum, k: options.k });
      else drawLine(svg, days, series, { left: left, top: top, step: step, height: plotHeight, maximum: maximum, k: options.k });
    });
    container.appendChild(svg);
    if (options.kind === "lines") container.appendChild(legend(options.series));
  }

  function drawGrid(svg, maximum, box) {
    for (var i = 0; i <= 4; i++) {
      var y = box.top + box.height - (box.height * i) / 4;
      svg.appendChild(svgElement("line", { x1: box.left, x2: box.left + box.width, y1: y, y2: y, class: "grid" }));
      svg.appendChild(svgElement("text", { x: box.left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, formatCount((maximum * i) / 4)));
    }
  }

  function drawDayLabels(svg, days, place) {
    var every = Math.max(1, Math.ceil(days.length / 10));
    days.forEach(function (day, index) {
      if (index % every !== 0) return;
      var x = place.left + place.step * (index + 0.5);
      svg.appendChild(svgElement("text", { x: x, y: place.y, class: "axis", "text-anchor": "middle" }, day.day.slice(5)));
    });
  }

  function drawBars(svg, days, series, place) {
    var barWidth = Math.max(1, place.step * 0.72);
    days.forEach(function (day, index) {
      var value = series.valueOf(day);
      var x = place.left + place.step * index + (place.step - barWidth) / 2;
      var bar;
      if (value === 0) return;
      if (value === null) {
        // Hidden day: a faint hatched stub, so a gap is not mistaken for zero.
        bar = svgElement("rect", { x: x, y: place.top + place.height - 6, width: barWidth, height: 6, class: "bar-suppressed" });
        bar.appendChild(svgElement("title", {}, day.day + ": < " + place.k + " people"));
      } else {
        var barHeight = (place.height * value) / place.maximum;
        bar = svgElement("rect", { x: x, y: place.top + place.height - barHeight, width: barWidth, height: barHeight, class: "bar", fill: series.color });
        bar.appendChild(svgElement("title", {}, day.day + ": " + value.toLocaleString("en") + " runs"));
      }
      svg.appendChild(bar);
    });
  }

  function drawLine(svg, days, series, place) {
    var path = "", pen = "M", marks = [];
    days.forEach(function (day, index) {
      var value = series.valueOf(day);
      var x = place.left + place.step * (index + 0.5);
      if (value === null) {
        pen = "M";  // a hidden day breaks the line
        var mark = svgElement("circle", { cx: x, cy: place.top + place.height, r: 2.5, class: "point-suppressed" });
        mark.appendChild(svgElement("title", {}, day.day + " (" + series.label + "): < " + place.k + " people"));
        marks.push(mark);
        return;
      }
      var y = place.top + place.height - (place.height * value) / place.maximum;
      path += pen + x.toFixed(1) + " " + y.toFixed(1) + " ";
      pen = "L";
      var dot = svgElement("circle", { cx: x, cy: y, r: days.length > 60 ? 1.5 : 3, fill: series.color, class: "point" });
      dot.appendChild(svgElement("title", {}, day.day + " (" + series.label + "): " + value.toLocaleString("en")));
      marks.push(dot);
    });
    if (path) svg.appendChild(svgElement("path", { d: path, class: "line", stroke: series.color }));
    marks.forEach(function (mark) { svg.appendChild(mark); });
  }

  function legend(series) {
    var box = element("div", { class: "legend" });
    series.forEach(function (entry) {
      var item = element("span", { class: "legend-item" });
      item.appendChild(element("i", { style: "background:" + entry.color }));
      item.appendChild(document.createTextNode(entry.label + (entry.empty ? " (none)" : "")));
      box.appendChild(item);
    });
    return box;
  }

  // A ranked list of horizontal bars: value, bar, runs (or "< k").
  // ``total`` is the runs of the whole view (null when hidden): shares are of all runs,
  // so hiding a small group never inflates the others' percentages.
  function barList(container, entries, k, total) {
    if (!entries || entries.length === 0) {
      container.appendChild(element("p", { class: "empty" }, "No runs in this range."));
      return;
    }
    var largest = 0;
    entries.forEach(function (entry) { if (entry.runs !== null && entry.runs > largest) largest = entry.runs; });
    var list = element("ul", { class: "bar-list" });
    entries.slice(0, MAX_ROWS).forEach(function (entry) {
      list.appendChild(barRow(entry, largest, total, k));
    });
    container.appendChild(list);
    if (entries.length > MAX_ROWS) {
      var more = element("details", { class: "more" });
      more.appendChild(element("summary", {}, (entries.length - MAX_ROWS) + " more"));
      var rest = element("ul", { class: "bar-list" });
      entries.slice(MAX_ROWS).forEach(function (entry) { rest.appendChild(barRow(entry, largest, total, k)); });
      more.appendChild(rest);
      container.appendChild(more);
    }
  }

  function barRow(entry, largest, total, k) {
    var row = element("li", { class: entry.suppressed ? "row row-suppressed" : "row" });
    var label = entry.value === null ? "unknown" : String(entry.value);
    row.appendChild(element("span", { class: "row-label", title: label }, label));
    var track = element("span", { class: "row-track" });
    var share = entry.runs === null || largest === 0 ? 0 : (100 * entry.runs) / largest;
    track.appendChild(element("span", { class: entry.suppressed ? "row-bar row-bar-suppressed" : "row-bar", style: "width:" + (entry.suppressed ? 4 : Math.max(share, 0.5)) + "%" }));
    row.appendChild(track);
    var figure = element("span", { class: "row-value" });
    figure.appendChild(valueCell(entry.runs === null ? null : formatCount(entry.runs), entry.suppressed, k));
    if (!entry.suppressed && total) figure.appendChild(element("small", {}, " " + Math.round((100 * entry.runs) / total) + "%"));
    row.appendChild(figure);
    return row;
  }

  function versionTable(container, versions, k) {
    if (!versions.length) {
      container.appendChild(element("p", { class: "empty" }, "No runs in this range."));
      return;
    }
    var largest = 0;
    versions.forEach(function (entry) { if (entry.runs !== null && entry.runs > largest) largest = entry.runs; });
    var table = element("table", { class: "version-table" });
    var head = element("tr");
    ["Version", "Runs", "", "Failure rate", "Duration p50", "p95", "Peak memory p50", "p95"].forEach(function (title) {
      head.appendChild(element("th", {}, title));
    });
    table.appendChild(element("thead")).appendChild(head);
    var body = table.appendChild(element("tbody"));
    versions.forEach(function (entry) { body.appendChild(versionRow(entry, largest, k)); });
    container.appendChild(table);
  }

  function versionRow(entry, largest, k) {
    var hidden = Boolean(entry.suppressed);
    var row = element("tr", { class: hidden ? "row-suppressed" : "" });
    row.appendChild(element("td", { class: "version" }, entry.value === null ? "unknown" : entry.value));
    row.appendChild(cell(valueCell(entry.runs === null ? null : entry.runs.toLocaleString("en"), hidden, k), "number"));
    var track = element("span", { class: "row-track" });
    track.appendChild(element("span", { class: hidden ? "row-bar row-bar-suppressed" : "row-bar", style: "width:" + (hidden || !largest ? 4 : (100 * entry.runs) / largest) + "%" }));
    row.appendChild(cell(track, "track"));
    var rate = element("span", { class: "rate" });
    rate.appendChild(valueCell(formatRate(entry.failure_rate), hidden, k));
    if (!hidden && entry.failure_rate) rate.appendChild(element("span", { class: "rate-bar", style: "width:" + Math.max(entry.failure_rate * 100, 1) + "%" }));
    row.appendChild(cell(rate, entry.failure_rate > 0 ? "number failing" : "number"));
    row.appendChild(cell(valueCell(formatDuration(entry.duration_ms.p50), hidden, k), "number"));
    row.appendChild(cell(valueCell(formatDuration(entry.duration_ms.p95), hidden, k), "number"));
    row.appendChild(cell(valueCell(formatMemory(entry.peak_rss_kib.p50), hidden, k), "number"));
    row.appendChild(cell(valueCell(formatMemory(entry.peak_rss_kib.p95), hidden, k), "number"));
    return row;
  }

  function cell(content, className) {
    var td = element("td", { class: className || "" });
    td.appendChild(content);
    return td;
  }

  function fillCards(summary) {
    var duration = document.getElementById("duration-card");
    var memory = document.getElementById("memory-card");
    if (duration && summary.duration_ms.p50 !== null) showPercentiles(duration, formatDuration(summary.duration_ms.p50), formatDuration(summary.duration_ms.p95));
    if (memory && summary.peak_rss_kib.p50 !== null) showPercentiles(memory, formatMemory(summary.peak_rss_kib.p50), formatMemory(summary.peak_rss_kib.p95));
    if (summary.suppressed) {
      [duration, memory].forEach(function (node) {
        if (!node) return;
        node.textContent = "";
        node.appendChild(suppressedLabel(summary.k));
      });
    }
  }

  function showPercentiles(node, median, high) {
    node.textContent = median;
    node.appendChild(element("small", { class: "card-secondary" }, " p95 " + high));
  }

  function drawProperties(container, properties, k, total) {
    var names = Object.keys(properties);
    if (!names.length) {
      container.appendChild(element("p", { class: "empty" }, "No custom properties in this range (plausipy.track(name=value) adds them)."));
      return;
    }
    names.forEach(function (name) {
      var panel = element("section", { class: "panel panel-inner" });
      panel.appendChild(element("h3", {}, name));
      var bars = element("div", { class: "bars", "data-property": name });
      barList(bars, properties[name], k, total);
      panel.appendChild(bars);
      container.appendChild(panel);
    });
  }

  function draw() {
    var source = document.getElementById("summary-data");
    if (!source) return;
    var summary = JSON.parse(source.textContent);
    var k = summary.k;
    fillCards(summary);
    dayChart(document.getElementById("chart-runs"), summary.by_day, {
      kind: "bars", k: k,
      series: [{ label: "runs", color: "var(--series-runs)", valueOf: function (day) { return day.runs; } }],
    });
    dayChart(document.getElementById("chart-ids"), summary.by_day, {
      kind: "lines", k: k,
      series: SERIES.map(function (series) {
        return { label: series.label, color: series.color, valueOf: function (day) { return day.ids[series.key]; } };
      }),
    });
    versionTable(document.getElementById("chart-versions"), summary.by_version, k);
    Array.prototype.forEach.call(document.querySelectorAll("[data-list]"), function (container) {
      barList(container, summary[container.getAttribute("data-list")], k, summary.runs);
    });
    drawProperties(document.getElementById("chart-properties"), summary.properties, k, summary.runs);
    document.getElementById("dashboard").setAttribute("data-drawn", "true");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
