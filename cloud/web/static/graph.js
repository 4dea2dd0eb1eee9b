// Graphs with uPlot: several channels of one terminal on one chart, each on
// the axis of its unit, with the warning and alarm levels as dashed lines,
// alarms as marks (raised, cleared, the time in between shaded) and samples
// that arrived late circled. Dates and numbers follow the page's language and
// the viewer's time zone, whatever the browser's own settings.
//
// Every range change (preset buttons, custom dates, drag-zoom) asks the server
// for that range again, so a zoom into a year-long graph gets finer buckets
// (or raw samples) instead of stretching the coarse ones. Each channel's
// response has columns t / min / mean / max (equal for raw samples) and its
// levels, alarms and late sample times.
"use strict";

(() => {
  const section = document.getElementById("graphs");
  if (!section || typeof uPlot === "undefined") return;
  const figure = section.querySelector("figure.graph");
  if (!figure) return;
  const plot = figure.querySelector(".plot");
  const notes = figure.querySelector(".graph-notes");
  const info = section.querySelector(".graph-info");
  const url = section.dataset.url;
  const zone = section.dataset.zone;
  const lang = document.documentElement.lang || "en";
  const t = JSON.parse(section.dataset.text);  // translated words
  const fixed = section.dataset.start ? [Number(section.dataset.start), Number(section.dataset.end)] : null;
  const focus = Number(section.dataset.focus || 0);  // an alarm to single out
  const COLORS = ["#1f5fa8", "#2e7d32", "#8e44ad", "#d35400", "#00838f", "#6d4c41"];
  const SEVERITY = {warning: "#b26a00", alarm: "#c62828"};
  const CLEARED = "#2e7d32";
  const LATE = "#6d4c9f";
  const INK = "#1d2430";

  // -- dates and numbers in the page's language and the viewer's zone ----------
  const dtf = (opts) => new Intl.DateTimeFormat(lang, {timeZone: zone, ...opts});
  const fmt = {
    hm: dtf({hour: "2-digit", minute: "2-digit", hourCycle: "h23"}),
    md: dtf({month: "numeric", day: "numeric"}),
    ym: dtf({year: "numeric", month: "numeric"}),
    y: dtf({year: "numeric"}),
    full: dtf({year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
               minute: "2-digit", second: "2-digit", hourCycle: "h23"}),
    day: dtf({year: "numeric", month: "2-digit", day: "2-digit"}),
  };
  const num = new Intl.NumberFormat(lang, {maximumFractionDigits: 3});
  const at = (ts) => new Date(ts * 1000);

  function zoneOffset(ts) {  // seconds east of UTC in the viewer's zone at ts
    const parts = {};
    for (const p of new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric",
      hour: "numeric", minute: "numeric", second: "numeric",
    }).formatToParts(at(ts))) parts[p.type] = Number(p.value);
    return Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute,
                    parts.second) / 1000 - ts;
  }

  function localMidnight(text) {  // "2026-12-06" or "2026/12/6" -> epoch s, or NaN
    const m = /^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\s*$/.exec(text || "");
    if (!m) return NaN;
    const guess = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) / 1000;
    return guess - zoneOffset(guess - zoneOffset(guess));
  }

  function timeTicks(u, splits, _axis, _space, incr) {
    let lastDay = null;
    return splits.map((ts) => {
      if (ts == null) return "";
      if (incr >= 365 * 86400) return fmt.y.format(at(ts));
      if (incr >= 28 * 86400) return fmt.ym.format(at(ts));
      if (incr >= 86400) return fmt.md.format(at(ts));
      const day = fmt.md.format(at(ts));
      const text = day !== lastDay ? `${fmt.hm.format(at(ts))}\n${day}` : fmt.hm.format(at(ts));
      lastDay = day;
      return text;
    });
  }

  // -- what is shown -------------------------------------------------------------
  const picks = [...section.querySelectorAll("input[name=graph-channel]")];
  const fixedChannels = (figure.dataset.channels || "").split(",").filter(Boolean);
  const selected = () => (picks.length ? picks.filter((p) => p.checked).map((p) => p.value)
                                       : fixedChannels);
  let preset = 86400;  // seconds back from now, or null for a custom or fixed range
  let chart = null;
  let shown = [];  // one entry per channel: its response
  let generation = 0;  // a newer load wins over an older one still in flight

  const now = () => Math.floor(Date.now() / 1000);
  const width = () => Math.max(280, plot.clientWidth);
  const height = () => (window.innerWidth < 600 ? 220 : 300);

  function scaleOf(d) {
    return d.states ? "state" : `u:${d.unit}`;
  }

  function valueText(d, v) {
    if (v == null) return "—";
    if (d.states) return d.states[v ? 1 : 0];
    return d.unit ? `${num.format(v)} ${d.unit}` : num.format(v);
  }

  function build(lo, hi) {
    const single = shown.length === 1 && !shown[0].states;
    const tables = shown.map((d) => (single ? [d.t, d.max, d.mean, d.min] : [d.t, d.mean]));
    const data = tables.length ? uPlot.join(tables) : [[]];
    const series = [{label: t.time, value: (u, ts) => (ts == null ? "—" : fmt.full.format(at(ts)))}];
    const scales = {x: {time: true, min: lo, max: hi}};
    const axes = [{values: timeTicks, space: 60, stroke: INK}];
    const units = [];
    shown.forEach((d, i) => {
      const color = COLORS[i % COLORS.length];
      const scale = scaleOf(d);
      if (!scales[scale]) {
        // A level far from the values still shows: the axis reaches it.
        const levels = shown.filter((e) => scaleOf(e) === scale).flatMap((e) => e.levels)
                            .map((l) => l.value);
        scales[scale] = d.states ? {range: [-0.2, 1.2]} : {
          range: (u, lo, hi) => {
            const a = Math.min(lo ?? Infinity, ...levels);
            const b = Math.max(hi ?? -Infinity, ...levels);
            return Number.isFinite(a) && Number.isFinite(b) ? uPlot.rangeNum(a, b, 0.1, true) : [0, 1];
          },
        };
        units.push(scale);
        axes.push({
          scale,
          side: units.length % 2 ? 3 : 1,
          size: 64,
          grid: {show: units.length === 1},
          stroke: units.length === 1 ? INK : color,
          label: d.states ? "" : d.unit,
          splits: d.states ? () => [0, 1] : undefined,
          values: d.states ? (u, v) => v.map((x) => d.states[x ? 1 : 0])
                           : (u, v) => v.map((x) => num.format(x)),
        });
      }
      const paths = d.states ? uPlot.paths.stepped({align: 1}) : undefined;
      const line = (label, stroke, w) => ({label, stroke, width: w, scale, paths,
                                           value: (u, v) => valueText(d, v)});
      if (single) {
        series.push(line(`${d.label} ${t.max}`, "#d98c8c", 1),
                    line(`${d.label} ${t.mean}`, color, 2),
                    line(`${d.label} ${t.min}`, "#8cb3d9", 1));
      } else {
        series.push(line(d.label, color, 2));
      }
    });
    return {data, opts: {
      width: width(), height: height(), tzDate: (ts) => uPlot.tzDate(at(ts), zone),
      cursor: {drag: {x: true, y: false, setScale: false}},
      scales, axes, series, legend: {live: true},
      hooks: {draw: [annotate], setSelect: [zoom]},
    }};
  }

  // -- levels, alarms and late samples drawn over the values -------------------------
  function annotate(u) {
    const ctx = u.ctx;
    const {left, top, width: w, height: h} = u.bbox;
    const px = devicePixelRatio || 1;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, w, h);
    ctx.clip();
    for (const d of shown) {
      for (const a of d.alarms) {  // shaded while open, a line where it rose and one where it cleared
        const x0 = u.valToPos(a.raised, "x", true);
        const x1 = u.valToPos(a.cleared ?? u.scales.x.max, "x", true);
        ctx.fillStyle = SEVERITY[a.severity] + (a.id === focus ? "40" : "1c");
        ctx.fillRect(x0, top, Math.max(1, x1 - x0), h);
        ctx.fillStyle = SEVERITY[a.severity];
        ctx.fillRect(x0 - px, top, 2 * px, h);
        ctx.beginPath();  // a flag at the top where it rose
        ctx.moveTo(x0, top);
        ctx.lineTo(x0 + 8 * px, top + 5 * px);
        ctx.lineTo(x0, top + 10 * px);
        ctx.fill();
        if (a.cleared != null) {
          ctx.fillStyle = CLEARED;
          ctx.fillRect(x1 - px, top, 2 * px, h);
        }
      }
      if (d.states) continue;
      ctx.lineWidth = 2 * px;
      ctx.font = `${11 * px}px sans-serif`;
      ctx.textAlign = "right";
      for (const level of d.levels) {
        const y = u.valToPos(level.value, scaleOf(d), true);
        if (!(y >= top && y <= top + h)) continue;
        ctx.strokeStyle = ctx.fillStyle = SEVERITY[level.severity];
        ctx.setLineDash([6 * px, 4 * px]);
        ctx.beginPath();
        ctx.moveTo(left, y);
        ctx.lineTo(left + w, y);
        ctx.stroke();
        ctx.fillText(`${t[level.severity]} ${valueText(d, level.value)}`, left + w - 4 * px, y - 3 * px);
      }
      ctx.setLineDash([]);
      ctx.strokeStyle = LATE;
      ctx.lineWidth = 1.5 * px;
      const mean = d.lateValues || [];
      d.late.forEach((ts, i) => {
        const x = u.valToPos(ts, "x", true);
        const y = u.valToPos(mean[i], scaleOf(d), true);
        ctx.beginPath();
        ctx.arc(x, y, 4 * px, 0, 2 * Math.PI);
        ctx.stroke();
      });
    }
    ctx.restore();
  }

  function zoom(u) {
    if (fixed || u.select.width < 5) return;
    const lo = Math.floor(u.posToVal(u.select.left, "x"));
    const hi = Math.ceil(u.posToVal(u.select.left + u.select.width, "x"));
    u.setSelect({left: 0, width: 0, top: 0, height: 0}, false);
    if (hi - lo >= 60) {
      preset = null;
      load(lo, hi);
    }
  }

  // The same facts as text under the chart: for reading aloud, and for people
  // who cannot tell the colours apart.
  function describe() {
    notes.replaceChildren();
    const item = (cls, text) => {
      const li = document.createElement("li");
      li.className = cls;
      li.textContent = text;
      notes.append(li);
    };
    for (const d of shown) {
      for (const level of d.levels) {
        item(`level sev-${level.severity}`,
             `${d.label}: ${t[level.severity + "Level"]} ${valueText(d, level.value)}`);
      }
      for (const a of d.alarms) {
        const cleared = a.cleared != null ? ` – ${t.cleared} ${fmt.full.format(at(a.cleared))}` : "";
        item(`alarm sev-${a.severity}`,
             `${d.label}: ${t[a.severity]} ${t.raised} ${fmt.full.format(at(a.raised))}${cleared}`);
      }
      if (d.late.length) item("late", `${d.label}: ${t.late} ${d.late.length}`);
    }
  }

  async function fetchOne(channel, lo, hi) {
    const q = new URLSearchParams({channel, start: lo, end: hi,
                                   points: Math.min(2000, Math.max(1500, 2 * width()))});
    const response = await fetch(`${url}?${q}`, {credentials: "same-origin",
                                                  headers: {Accept: "application/json"}});
    if (!response.ok) throw new Error(`${response.status}`);
    const d = await response.json();
    const index = new Map(d.t.map((ts, i) => [ts, i]));
    d.lateValues = d.late.map((ts) => d.mean[index.get(ts)]);
    return d;
  }

  async function load(lo, hi) {
    const mine = ++generation;
    section.classList.add("loading");
    try {
      const results = await Promise.all(selected().map((ch) => fetchOne(ch, lo, hi)));
      if (mine !== generation) return;
      shown = results;
      const {data, opts} = build(lo, hi);
      if (chart) chart.destroy();
      plot.replaceChildren();
      chart = new uPlot(opts, data, plot);
      const points = results.reduce((n, d) => n + d.t.length, 0);
      figure.classList.toggle("empty", points === 0);
      figure.dataset.empty = t.empty;
      figure.dataset.points = String(points);
      figure.dataset.raw = String(results.every((d) => d.raw));
      figure.dataset.channels = results.map((d) => d.channel).join(",");
      figure.dataset.levels = String(results.reduce((n, d) => n + d.levels.length, 0));
      figure.dataset.alarms = String(results.reduce((n, d) => n + d.alarms.length, 0));
      figure.dataset.late = String(results.reduce((n, d) => n + d.late.length, 0));
      describe();
      const coarse = results.find((d) => !d.raw);
      if (info) info.textContent = coarse ? `(${t.bucket} ${Math.round(coarse.width / 60)} min)` : "";
    } catch (err) {
      if (info) info.textContent = `! ${err.message}`;
    } finally {
      if (mine === generation) {
        section.classList.remove("loading");
        section.dataset.loaded = String(Date.now());
      }
    }
  }

  function loadPreset() {
    if (fixed) return load(fixed[0], fixed[1]);
    const end = now();
    return load(end - preset, end);
  }

  for (const button of section.querySelectorAll(".ranges button")) {
    button.addEventListener("click", () => {
      if (button.dataset.range === "custom") {
        const lo = localMidnight(section.querySelector("input[name=from]").value);
        const hi = localMidnight(section.querySelector("input[name=to]").value) + 86400;
        const bad = !(hi > lo);
        section.querySelector(".custom").classList.toggle("invalid", bad);
        if (bad) return;
        preset = null;
        load(lo, hi);
      } else {
        preset = Number(button.dataset.range);
        loadPreset();
      }
      for (const b of section.querySelectorAll(".ranges button")) b.classList.remove("active");
      button.classList.add("active");
    });
  }
  for (const pick of picks) {
    pick.addEventListener("change", () => {
      if (!selected().length) pick.checked = true;  // one channel at least
      const x = chart ? [chart.scales.x.min, chart.scales.x.max] : null;
      if (x && !preset) load(x[0], x[1]);
      else loadPreset();
    });
  }
  plot.addEventListener("dblclick", () => {
    if (fixed) return;
    preset = preset || 86400;
    loadPreset();
  });
  window.addEventListener("resize", () => {
    if (chart) chart.setSize({width: width(), height: height()});
  });

  loadPreset();
  // Keep a preset range moving with the clock.
  setInterval(() => { if (preset && !fixed) loadPreset(); }, 60000);
})();

// Live values table: refreshed every 30 s.
(() => {
  const table = document.getElementById("live");
  if (!table) return;
  const lang = document.documentElement.lang || "en";
  const fmt = new Intl.NumberFormat(lang, {maximumFractionDigits: 3});
  const zone = table.dataset.zone;
  const time = new Intl.DateTimeFormat(lang, {timeZone: zone, month: "2-digit", day: "2-digit",
                                              hour: "2-digit", minute: "2-digit", second: "2-digit",
                                              hourCycle: "h23"});
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
        row.querySelector(".t").textContent = time.format(new Date(v.ts * 1000));
      }
    } catch (err) {
      // Offline for a moment: the next refresh tries again.
    }
  }
  setInterval(refresh, 30000);
})();
