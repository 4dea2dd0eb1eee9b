// Terminal graphs with uPlot: one chart per channel, server-side downsampling.
//
// Every range change (preset buttons, custom dates, drag-zoom) asks the server
// for that range again, so a zoom into a year-long graph gets finer buckets
// (or raw samples) instead of stretching the coarse ones. Each response has
// columns t / min / mean / max (equal for raw samples).
"use strict";

(() => {
  const section = document.getElementById("graphs");
  if (!section || typeof uPlot === "undefined") return;
  const url = section.dataset.url;
  const zone = section.dataset.zone;
  const labels = {min: section.dataset.labelMin, mean: section.dataset.labelMean,
                  max: section.dataset.labelMax, empty: section.dataset.labelEmpty};
  const info = section.querySelector(".graph-info");
  const charts = [];
  let preset = 86400;  // seconds back from now, or null for a custom range
  let range = null;  // [start, end] epoch seconds currently shown

  const now = () => Math.floor(Date.now() / 1000);

  function width(el) {
    return Math.max(280, el.clientWidth);
  }

  function makeChart(figure) {
    const plot = figure.querySelector(".plot");
    const unit = figure.dataset.unit || "";
    const opts = {
      width: width(plot),
      height: window.innerWidth < 600 ? 180 : 240,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), zone),
      cursor: {drag: {x: true, y: false, setScale: false}, sync: {key: "mimamori"}},
      scales: {x: {time: true}},
      legend: {live: true},
      axes: [{}, {label: unit, size: 60}],
      series: [
        {},
        {label: labels.max, stroke: "#d98c8c", width: 1, spanGaps: false},
        {label: labels.mean, stroke: "#1f5fa8", width: 2, spanGaps: false},
        {label: labels.min, stroke: "#8cb3d9", width: 1, spanGaps: false},
      ],
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 5) return;
          const lo = Math.floor(u.posToVal(u.select.left, "x"));
          const hi = Math.ceil(u.posToVal(u.select.left + u.select.width, "x"));
          u.setSelect({left: 0, width: 0, top: 0, height: 0}, false);
          if (hi - lo >= 60) {
            preset = null;
            load(lo, hi);
          }
        }],
      },
    };
    const chart = new uPlot(opts, [[], [], [], []], plot);
    plot.addEventListener("dblclick", () => {
      preset = preset || 86400;
      loadPreset();
    });
    return {figure, plot, chart, channel: figure.dataset.channel};
  }

  async function fetchOne(c, lo, hi) {
    const q = new URLSearchParams({channel: c.channel, start: lo, end: hi,
                                   points: Math.min(2000, Math.max(200, 2 * width(c.plot)))});
    const response = await fetch(`${url}?${q}`, {credentials: "same-origin",
                                                  headers: {Accept: "application/json"}});
    if (!response.ok) throw new Error(`${response.status}`);
    const d = await response.json();
    // An empty channel folds to one line; unfolding needs the real width again.
    c.figure.dataset.empty = labels.empty;
    c.figure.classList.toggle("empty", d.t.length === 0);
    if (d.t.length) c.chart.setSize({width: width(c.plot), height: c.chart.height});
    c.chart.setData([d.t, d.max, d.mean, d.min], false);
    c.chart.setScale("x", {min: lo, max: hi});
    c.figure.dataset.points = String(d.t.length);
    c.figure.dataset.raw = String(d.raw);
    return d;
  }

  async function load(lo, hi) {
    range = [lo, hi];
    section.classList.add("loading");
    try {
      const results = await Promise.all(charts.map((c) => fetchOne(c, lo, hi)));
      const first = results[0];
      if (info && first) {
        info.textContent = first.raw ? "" : `(${Math.round(first.width / 60)} min)`;
      }
    } catch (err) {
      if (info) info.textContent = `! ${err.message}`;
    } finally {
      section.classList.remove("loading");
      section.dataset.loaded = String(Date.now());
    }
  }

  function loadPreset() {
    const end = now();
    load(end - preset, end);
  }

  for (const figure of section.querySelectorAll("figure.graph")) {
    charts.push(makeChart(figure));
  }
  if (!charts.length) return;

  for (const button of section.querySelectorAll(".ranges button")) {
    button.addEventListener("click", () => {
      for (const b of section.querySelectorAll(".ranges button")) b.classList.remove("active");
      button.classList.add("active");
      if (button.dataset.range === "custom") {
        const from = section.querySelector("input[name=from]").value;
        const to = section.querySelector("input[name=to]").value;
        if (!from || !to) return;
        const lo = Date.parse(`${from}T00:00:00`) / 1000;
        const hi = Date.parse(`${to}T00:00:00`) / 1000 + 86400;
        if (!(hi > lo)) return;
        preset = null;
        load(lo, hi);
      } else {
        preset = Number(button.dataset.range);
        loadPreset();
      }
    });
  }

  window.addEventListener("resize", () => {
    for (const c of charts) c.chart.setSize({width: width(c.plot), height: c.chart.height});
  });

  loadPreset();
  // Keep a preset range moving with the clock.
  setInterval(() => { if (preset) loadPreset(); }, 60000);
})();

// Live values table: refreshed every 30 s.
(() => {
  const table = document.getElementById("live");
  if (!table) return;
  const fmt = new Intl.NumberFormat(document.documentElement.lang, {maximumFractionDigits: 3});
  async function refresh() {
    try {
      const response = await fetch(table.dataset.url, {credentials: "same-origin"});
      if (!response.ok) return;
      const data = await response.json();
      for (const row of table.querySelectorAll("tr[data-channel]")) {
        const v = data.values[row.dataset.channel];
        if (!v) continue;
        // A contact shows its state's name (data-on / data-off), others the number.
        row.querySelector(".v").textContent =
          row.dataset.on ? (v.value ? row.dataset.on : row.dataset.off) : fmt.format(v.value);
        row.querySelector(".t").textContent = new Date(v.ts * 1000).toLocaleTimeString();
      }
    } catch (err) {
      // Offline for a moment: the next refresh tries again.
    }
  }
  setInterval(refresh, 30000);
})();
