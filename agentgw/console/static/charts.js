// Small SVG charts for the console (no library, nothing fetched): a stacked-free line chart over time and a
// horizontal bar chart. Every label is set as text, never parsed as markup.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#0b5cad", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#cf222e", "#0a7ea4", "#6e7781"];

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) {
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (v !== 0 && Math.abs(v) < 0.01) return v.toExponential(1);
    return String(Math.round(v * 100) / 100);
  }

  function legend(series) {
    const box = document.createElement("div");
    box.className = "legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = PALETTE[i % PALETTE.length];
      item.append(dot, document.createTextNode(s.name));
      box.append(item);
    });
    return box;
  }

  // series: [{name, points: [{t: epoch ms, v: number}]}]
  function line(container, series, opts) {
    const W = 960, H = 256, L = 52, R = 12, T = 12, B = 28;
    const pts = series.flatMap((s) => s.points);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": (opts && opts.label) || "chart" });
    svg.dataset.points = String(pts.length);
    if (!pts.length) {
      svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data"));
      container.append(svg);
      return svg;
    }
    const t0 = Math.min(...pts.map((p) => p.t)), t1 = Math.max(...pts.map((p) => p.t));
    const vmax = Math.max(1e-9, ...pts.map((p) => p.v));
    const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
    const y = (v) => H - B - (v / vmax) * (H - T - B);
    svg.append(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    svg.append(el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    for (let i = 0; i <= 4; i++) {
      const v = (vmax * i) / 4;
      svg.append(el("text", { x: L - 6, y: y(v) + 3, "text-anchor": "end" }, fmt(v)));
    }
    const ticks = Math.min(6, new Set(pts.map((p) => p.t)).size);
    for (let i = 0; i < ticks; i++) {
      const t = ticks === 1 ? t0 : t0 + ((t1 - t0) * i) / (ticks - 1);
      const d = new Date(t);
      const label = t1 - t0 > 2 * 86400e3 ? d.toISOString().slice(5, 10) : d.toISOString().slice(11, 16);
      svg.append(el("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, label));
    }
    series.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      const sorted = [...s.points].sort((a, b) => a.t - b.t);
      const d = sorted.map((p, j) => `${j ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
      svg.append(el("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series" }));
      for (const p of sorted) {
        const c = el("circle", { cx: x(p.t), cy: y(p.v), r: 2.5, fill: color });
        c.append(el("title", {}, `${s.name}: ${fmt(p.v)} at ${new Date(p.t).toISOString()}`));
        svg.append(c);
      }
    });
    container.append(legend(series), svg);
    return svg;
  }

  // rows: [{label, value}]
  function bars(container, rows, opts) {
    const W = 960, rowH = 22, L = 200, R = 70;
    const H = Math.max(1, rows.length) * rowH + 8;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": (opts && opts.label) || "bars" });
    svg.style.height = `${Math.max(3, rows.length) * 1.6}rem`;
    svg.dataset.points = String(rows.length);
    const vmax = Math.max(1e-9, ...rows.map((r) => r.value));
    rows.forEach((r, i) => {
      const yy = 4 + i * rowH;
      svg.append(el("text", { x: L - 8, y: yy + 14, "text-anchor": "end" }, r.label));
      const w = (r.value / vmax) * (W - L - R);
      svg.append(el("rect", { x: L, y: yy + 3, width: Math.max(1, w), height: rowH - 8, fill: PALETTE[i % PALETTE.length], class: "bar" }));
      svg.append(el("text", { x: L + w + 6, y: yy + 14 }, fmt(r.value)));
    });
    container.append(svg);
    return svg;
  }

  window.Charts = { line, bars, fmt, PALETTE };
})();
