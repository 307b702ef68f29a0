// fovea serve: the runs browser and try-it page. Plain JS over the JSON API (/api/...), no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const SKIP = new Set(["epoch", "step", "split", "lr", "time_s", "images_per_s"]);
const COLOURS = { train: "#2f6fde", val: "#e8702a", test: "#2a9d5c" };
let current = null; // the run shown: its /api/runs/{name} answer

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

async function api(path, options) {
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error((body && body.detail) || `${r.status} ${r.statusText}`);
  return body;
}

function describe(run) {
  const parts = [run.task, run.model, run.data && `on ${run.data}`, run.epochs && `${run.epochs} epochs`];
  return parts.filter(Boolean).join(" · ");
}

// ------------------------------------------------------------------ runs list and routing

async function loadRuns() {
  const [{ runs }, info] = await Promise.all([api("/api/runs"), api("/api/info")]);
  $("version").textContent = `fovea ${info.version}`;
  const list = $("run-list");
  list.replaceChildren(...runs.map((r) => el("li", {}, el("a", { href: `#/runs/${encodeURIComponent(r.name)}`,
    "data-run": r.name }, r.name, el("small", { text: [r.task, r.model].filter(Boolean).join(" · ") })))));
  if (!runs.length) list.replaceChildren(el("li", { class: "muted", text: "no runs" }));
  const table = $("run-table");
  table.replaceChildren(el("tr", {}, ...["run", "task", "model", "data", "epochs", "try it"].map((h) => el("th", { text: h }))),
    ...runs.map((r) => el("tr", {}, el("td", {}, el("a", { href: `#/runs/${encodeURIComponent(r.name)}`, text: r.name })),
      el("td", { text: r.task || "" }), el("td", { text: r.model || "" }), el("td", { text: r.data || "" }),
      el("td", { text: r.epochs ?? "" }), el("td", { text: r.predict ? "yes" : "" }))));
}

function route() {
  const m = location.hash.match(/^#\/runs\/(.+)$/);
  for (const a of document.querySelectorAll("#run-list a")) a.classList.toggle("active", m && a.dataset.run === decodeURIComponent(m[1]));
  if (!m) { $("home").hidden = false; $("run").hidden = true; current = null; return; }
  showRun(decodeURIComponent(m[1]));
}

async function showRun(name) {
  $("home").hidden = true; $("run").hidden = false;
  $("run-name").textContent = name; $("run-meta").textContent = "";
  for (const id of ["curves", "plots", "config", "result"]) $(id).replaceChildren();
  $("report-link").replaceChildren(); setStatus("");
  let run;
  try { run = await api(`/api/runs/${encodeURIComponent(name)}`); } catch (e) { $("run-meta").textContent = e.message; return; }
  current = run;
  $("run-meta").textContent = describe(run);
  setupTry(run);
  showPlots(run);
  showConfig(run);
  if (run.metric_columns.length) {
    try { drawCurves(await api(`/api/runs/${encodeURIComponent(name)}/metrics`)); } catch (e) { $("curves").textContent = e.message; }
  } else $("curves").append(el("p", { class: "muted", text: "no metrics.csv" }));
}

function showPlots(run) {
  const base = `/api/runs/${encodeURIComponent(run.name)}`;
  $("plots").replaceChildren(...run.plots.map((p) => el("div", { class: "card" }, el("h3", { text: p }),
    el("img", { src: `${base}/plots/${encodeURIComponent(p)}`, alt: p, loading: "lazy" }))));
  if (!run.plots.length) $("plots").append(el("p", { class: "muted", text: "no plots" }));
  if (run.report) $("report-link").append(el("a", { href: `${base}/report`, target: "_blank", text: "report.html" }));
}

function showConfig(run) {
  const rows = Object.entries(run.config).map(([k, v]) => el("tr", {}, el("th", { text: k }),
    el("td", {}, el("code", { text: typeof v === "object" && v !== null ? JSON.stringify(v) : String(v) }))));
  $("config").replaceChildren(...rows);
}

// ------------------------------------------------------------------ curves from metrics.csv

function drawCurves({ columns, rows }) {
  const box = $("curves");
  const metrics = columns.filter((c) => !SKIP.has(c) && rows.some((r) => typeof r[c] === "number"));
  for (const metric of metrics) {
    const series = {};
    for (const r of rows) {
      if (typeof r[metric] !== "number") continue;
      const x = typeof r.step === "number" ? r.step : r.epoch;
      (series[r.split || "all"] ||= []).push([x, r[metric]]);
    }
    const canvas = el("canvas", { width: 360, height: 200, "aria-label": `${metric} curve` });
    plot(canvas, series);
    const legend = el("div", { class: "legend" }, ...Object.keys(series).map((s) => {
      const i = el("i"); i.style.background = COLOURS[s] || "#555";
      return el("span", {}, i, `${s} (${series[s].length})`);
    }));
    box.append(el("div", { class: "card curve", "data-metric": metric }, el("h3", { text: metric }), canvas, legend));
  }
  if (!metrics.length) box.append(el("p", { class: "muted", text: "no numeric metrics" }));
}

function plot(canvas, series) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 48, R = 10, T = 10, B = 24;
  const pts = Object.values(series).flat();
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  ctx.strokeStyle = "#d9dde5"; ctx.fillStyle = "#6b7280"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4, py = sy(y);
    ctx.beginPath(); ctx.moveTo(L, py); ctx.lineTo(W - R, py); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(fmt(y), L - 4, py + 4);
  }
  ctx.textAlign = "left"; ctx.fillText(fmt(x0), L, H - 6);
  ctx.textAlign = "right"; ctx.fillText(`${fmt(x1)} (step)`, W - R, H - 6);
  for (const [name, p] of Object.entries(series)) {
    ctx.strokeStyle = COLOURS[name] || "#555"; ctx.fillStyle = ctx.strokeStyle; ctx.lineWidth = 2;
    ctx.beginPath();
    p.forEach(([x, y], i) => (i ? ctx.lineTo(sx(x), sy(y)) : ctx.moveTo(sx(x), sy(y))));
    ctx.stroke();
    if (p.length < 30) for (const [x, y] of p) { ctx.beginPath(); ctx.arc(sx(x), sy(y), 2.5, 0, 7); ctx.fill(); }
  }
}

function fmt(v) {
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(1) : String(+v.toPrecision(3));
}

// ------------------------------------------------------------------ try it

function setupTry(run) {
  $("try").hidden = !run.predict;
  if (!run.predict) return;
  const pair = run.uploads === 2, none = run.uploads === 0;
  $("drop1").hidden = none; $("drop2").hidden = !pair;
  $("drop1-label").textContent = pair ? (run.task === "depth" ? "Left view" : "First frame") + ": drop or click"
    : "Drop an image here or click to choose one";
  $("drop2-label").textContent = (run.task === "depth" ? "Right view" : "Second frame") + ": drop or click";
  $("k-field").hidden = run.task !== "classify";
  $("n-field").hidden = !none;
  $("predict").textContent = none ? "Sample" : "Predict";
  for (const id of ["file", "file2"]) $(id).value = "";
  for (const id of ["preview1", "preview2"]) $(id).hidden = true;
}

function setStatus(text, error = false) { $("status").textContent = text; $("status").classList.toggle("error", error); }

function preview(input, img) {
  const f = input.files[0];
  if (!f) { img.hidden = true; return; }
  img.src = URL.createObjectURL(f); img.hidden = false;
}

async function predict() {
  if (!current) return;
  const run = current, form = new FormData();
  const f1 = $("file").files[0], f2 = $("file2").files[0];
  if (run.uploads >= 1 && !f1) { setStatus("choose an image first"); return; }
  if (run.uploads === 2 && !f2) { setStatus("choose the second image too"); return; }
  if (run.uploads >= 1) form.append("image", f1);
  if (run.uploads === 2) form.append("image2", f2);
  const q = new URLSearchParams();
  if (run.task === "classify") q.set("k", $("k").value);
  if (run.uploads === 0) { q.set("n", $("n").value); q.set("seed", $("seed").value); }
  $("predict").disabled = true; setStatus("working...");
  const t0 = performance.now();
  try {
    const r = await api(`/api/runs/${encodeURIComponent(run.name)}/predict?${q}`, { method: "POST", body: form });
    if (current !== run) return;
    showResult(r);
    setStatus(`done in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  } catch (e) {
    $("result").replaceChildren(); setStatus(e.message, true);
  } finally { $("predict").disabled = false; }
}

function figure(title, src, id) {
  return el("div", { class: "card" }, el("h3", { text: title }), el("img", { src, alt: title, ...(id ? { id } : {}) }));
}

function showResult(r) {
  const out = [];
  if (r.top) {
    const list = el("ol", { class: "top", id: "top" });
    for (const t of r.top) {
      const bar = el("div", { class: "bar" }); bar.style.width = `${Math.max(1, t.prob * 100)}%`;
      list.append(el("li", {}, el("span", { class: "cls", text: t.cls }), ` ${(t.prob * 100).toFixed(1)}%`, bar));
    }
    out.push(el("div", { class: "card" }, el("h3", { text: "top classes" }), list));
  }
  if (r.gradcam) out.push(figure(`Grad-CAM for ${r.gradcam.cls} (layer ${r.gradcam.layer})`, r.gradcam.overlay, "gradcam"));
  if (r.task === "segment") {
    out.push(figure("segmentation", r.overlay, "overlay"));
    const shares = el("ul"); for (const c of r.classes) if (c.share > 0) shares.append(el("li", { text: `${c.cls}: ${(c.share * 100).toFixed(1)}%` }));
    out.push(el("div", { class: "card" }, el("h3", { text: "classes" }), shares));
  }
  if (r.reconstruction) { out.push(figure("input", r.input)); out.push(figure(`reconstruction (mse ${r.mse.toFixed(4)})`, r.reconstruction, "output")); }
  if (r.samples) out.push(figure(`${r.n} samples`, r.samples, "output"));
  if (r.output && !r.reconstruction) {
    if (r.input) out.push(figure("input", r.input));
    const label = { superres: "upscaled", denoise: "denoised", stylenet: "stylized", flow: "optical flow", depth: "disparity" }[r.task] || "output";
    out.push(figure(`${label} (${r.size[0]}x${r.size[1]})`, r.output, "output"));
  }
  if (r.embedding) out.push(el("div", { class: "card" }, el("h3", { text: "embedding" }),
    el("p", { text: `${r.embedding.length} dimensions, norm ${r.norm.toFixed(3)}` })));
  if (r.neighbours) {
    const box = el("div", { class: "neighbours" });
    for (const n of r.neighbours) box.append(el("figure", {}, n.image ? el("img", { src: n.image, alt: n.path }) : null,
      el("figcaption", { text: `${n.rank}. ${n.score.toFixed(3)} ${n.path}` })));
    out.push(el("div", { class: "card" }, el("h3", { text: "nearest in the index" }), box));
  }
  $("result").replaceChildren(...out);
}

function setupDrop(drop, input, img) {
  input.addEventListener("change", () => { preview(input, img); if (current && current.uploads === 1) predict(); });
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (!e.dataTransfer.files.length) return;
    input.files = e.dataTransfer.files;
    input.dispatchEvent(new Event("change"));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupDrop($("drop1"), $("file"), $("preview1"));
  setupDrop($("drop2"), $("file2"), $("preview2"));
  $("try-form").addEventListener("submit", (e) => { e.preventDefault(); predict(); });
  window.addEventListener("hashchange", route);
  loadRuns().then(route).catch((e) => { $("run-list").replaceChildren(el("li", { text: e.message })); });
});
