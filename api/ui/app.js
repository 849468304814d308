// app.js — barlowd's dashboard. Polls the JSON routes every few seconds and draws what they
// say: the server's state, the learning curves, the cross-correlation matrix, the versions and
// the gate's decisions, the stored images and their neighbours, and searches by a dropped image.
//
// Rules kept throughout: client metadata is untrusted and only ever set as textContent (never
// innerHTML); with --api-key-reads the key lives in sessionStorage and travels only in the
// Authorization header, so images are fetched and shown as blob: URLs, never by a URL with a
// key in it; no third-party code, no inline script (the page's CSP forbids both).
"use strict";

const POLL_MS = 3000;
const KEY_NAME = "barlowd.apiKey";
const PAGE = 48; // thumbnails per Browse page
const K = 12;    // neighbours shown
const VERSION_ROWS = 12; // newest versions in the table (the chart shows all that are kept)
const $ = (id) => document.getElementById(id);

const state = {
  readsNeedKey: false,
  logEvery: 0,   // the training log's stride (steps), chosen at the first load
  logSince: 0,   // the last step loaded
  log: [],       // {step, loss, diag_mean, offdiag_abs_mean}
  browseAt: 0,      // the `after` of the Browse page shown
  browseNext: null,
  blobUrls: { browse: [], nb: [], search: [] },
};

// ---- requests ----

function key() { return sessionStorage.getItem(KEY_NAME); }

class HttpError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// fetch with the key in the header; JSON errors become HttpError with the server's code.
async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const k = key();
  if (k) headers.set("Authorization", "Bearer " + k);
  const r = await fetch(path, { cache: "no-store", ...opts, headers });
  if (!r.ok) {
    let code = "http_" + r.status, message = r.statusText;
    try { const j = await r.json(); code = j.error.code; message = j.error.message; } catch (e) { /* not JSON */ }
    if (r.status === 401) askKey("The server refused the key: " + message);
    throw new HttpError(r.status, code, message);
  }
  return r;
}
async function getJson(path) { return (await api(path)).json(); }

// An image route as a blob: URL (the caller revokes it with the grid it belongs to).
async function blobUrl(path, bucket) {
  // thumbnails may come from the browser's cache (the server marks them private, a day):
  // an id's image never changes
  const b = await (await api(path, { cache: "default" })).blob();
  const u = URL.createObjectURL(b);
  state.blobUrls[bucket].push(u);
  return u;
}
function revokeAll(bucket) {
  for (const u of state.blobUrls[bucket]) URL.revokeObjectURL(u);
  state.blobUrls[bucket] = [];
}

// ---- the key ----

function askKey(why) {
  const d = $("key-dialog");
  $("key-error").hidden = !why;
  $("key-error").textContent = why || "";
  if (!d.open) d.showModal();
}

function setupKey() {
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("key-input").value.trim();
    if (!v) return;
    sessionStorage.setItem(KEY_NAME, v);
    $("key-input").value = "";
    $("key-dialog").close();
    $("forget-key").hidden = false;
    refreshAll();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_NAME);
    $("forget-key").hidden = true;
    if (state.readsNeedKey) askKey();
  });
}

// ---- formatting ----

function fmt(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return v.toPrecision(digits);
}
function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }
function text(el, s) { el.textContent = s; }
function el(tag, cls, content) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (content !== undefined) e.textContent = content;
  return e;
}

// ---- Now ----

function showStatus(s) {
  text($("s-images"), fmt(s.images));
  text($("s-state"), s.training.state.replace(/_/g, " "));
  text($("s-step"), fmt(s.training.step));
  text($("s-loss"), s.training.step ? fmt(s.training.loss) : "–");
  text($("s-ips"), s.training.state === "training" ? fmt(s.training.images_per_s, 3) : "–");
  text($("s-lr"), s.training.step ? fmt(s.training.learning_rate, 3) : "–");
  const m = s.models;
  text($("s-serving"), String(m.serving_version));
  text($("s-pending"), m.pending_version === null ? "none" : String(m.pending_version));
  const re = m.reembedding;
  text($("s-reembed"), m.pending_version === null ? "–" : `${fmt(re.done)} / ${fmt(re.total)}`);
  const q = m.quality.serving;
  text($("s-knn"), q && q.knn20 !== null ? pct(q.knn20) : "–");
  text($("s-pixels"), q && q.pixels_knn20 !== null ? pct(q.pixels_knn20) : "–");
  text($("label-key"), m.quality.label_key);
  let note = "";
  const lk = m.quality.label_key;
  if (!q)
    note = `No accuracy yet: each new version is scored on the images that carry meta.${lk}.`;
  else if (q.knn20 === null)
    note = `No accuracy: ${fmt(q.labelled)} images carry meta.${lk}, and k-NN is measured from 200 on; ` +
           `until then the gate checks only that a version has not collapsed` +
           (q.effective_rank !== null ? ` (effective rank of the serving version ${fmt(q.effective_rank, 3)})` : "") + ".";
  else note = `Measured on ${fmt(q.labelled)} labelled images, leave-one-out, k = 20, cosine.`;
  if (s.training.error) note += " Training failed: " + s.training.error;
  text($("s-note"), note);
}

// ---- charts (canvas, no library) ----

// Draws series [{label, color, points: [[x, y], ...]}] with axes; returns the number of points.
function lineChart(canvas, series, opts = {}) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 52, R = 10, T = 20, B = 24;
  const css = getComputedStyle(document.body);
  const muted = css.getPropertyValue("--muted") || "#888";
  ctx.clearRect(0, 0, W, H);
  const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = muted;
  ctx.fillText(opts.title || "", L, 12);
  if (pts.length === 0) {
    ctx.fillText(opts.empty || "no data yet", L + 8, H / 2);
    return 0;
  }
  let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
  let y0 = Math.min(...pts.map((p) => p[1])), y1 = Math.max(...pts.map((p) => p[1]));
  if (opts.y0 !== undefined) y0 = Math.min(y0, opts.y0);
  if (opts.y1 !== undefined) y1 = Math.max(y1, opts.y1);
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const Y = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  ctx.strokeStyle = muted; ctx.lineWidth = 1; ctx.globalAlpha = 0.4;
  ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  ctx.globalAlpha = 1;
  for (let i = 0; i <= 3; i++) {
    const y = y0 + (y1 - y0) * i / 3;
    ctx.fillText(fmt(y, 3), 2, Y(y) + 4);
  }
  ctx.fillText(fmt(Math.round(x0)), L, H - 8);
  const xr = fmt(Math.round(x1)); ctx.fillText(xr, W - R - ctx.measureText(xr).width, H - 8);
  if (opts.xlabel) ctx.fillText(opts.xlabel, (W - ctx.measureText(opts.xlabel).width) / 2, H - 8);
  let lx = W - R;
  for (const s of [...series].reverse()) { // legend, right-aligned
    const w = ctx.measureText(s.label).width;
    lx -= w;
    ctx.fillStyle = s.color; ctx.fillText(s.label, lx, 12);
    lx -= 14;
  }
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.lineWidth = 1.5;
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    let started = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y)) continue;
      if (!started) { ctx.moveTo(X(x), Y(y)); started = true; } else ctx.lineTo(X(x), Y(y));
    }
    ctx.stroke();
    if (s.dots) for (const [x, y] of s.points) if (Number.isFinite(y)) ctx.fillRect(X(x) - 2, Y(y) - 2, 4, 4);
  }
  ctx.setLineDash([]);
  return pts.length;
}

// ---- learning curves ----

async function loadLog(status) {
  if (!state.logEvery) { // about 1,500 points over what has run so far, in multiples of 10 steps
    state.logEvery = 10 * Math.max(1, Math.ceil(status.training.step / 10 / 1500));
  }
  for (let pages = 0; pages < 10; pages++) {
    const j = await getJson(`/training-log?since=${state.logSince}&every=${state.logEvery}&limit=5000`);
    for (const r of j.rows) state.log.push(r);
    if (j.rows.length) state.logSince = j.rows[j.rows.length - 1].step;
    if (j.next === null) break;
  }
  if (state.log.length > 3000) { // thin: keep every other point and double the stride
    state.log = state.log.filter((_, i) => i % 2 === 1);
    state.logEvery *= 2;
  }
  const loss = state.log.map((r) => [r.step, r.loss]);
  const n = lineChart($("chart-loss"), [{ label: "loss", color: "#1f6feb", points: loss }],
    { title: "loss by step", empty: "no training steps logged yet" });
  $("chart-loss").dataset.points = String(n);
  const m = lineChart($("chart-c"), [
    { label: "mean c_ii", color: "#2e7d32", points: state.log.map((r) => [r.step, r.diag_mean]) },
    { label: "mean |c_ij|, i≠j", color: "#c62828", points: state.log.map((r) => [r.step, r.offdiag_abs_mean]) },
  ], { title: "cross-correlation by step", y0: 0, y1: 1, empty: "no training steps logged yet" });
  $("chart-c").dataset.points = String(m);
}

// ---- the cross-correlation heatmap ----

async function loadMatrix() {
  const j = await getJson("/c-matrix");
  const cv = $("heatmap");
  if (!j.size) {
    text($("m-step"), "No training step yet since the server started.");
    return;
  }
  cv.width = j.size; cv.height = j.size;
  const ctx = cv.getContext("2d");
  const img = ctx.createImageData(j.size, j.size);
  for (let i = 0; i < j.size; i++)
    for (let k = 0; k < j.size; k++) {
      const v = Math.max(-1, Math.min(1, j.values[i][k]));
      // diverging blue (−1) – white (0) – red (+1)
      const lo = [33, 102, 172], mid = [247, 247, 247], hi = [178, 24, 43];
      const [a, b, t] = v < 0 ? [mid, lo, -v] : [mid, hi, v];
      const o = 4 * (i * j.size + k);
      for (let c = 0; c < 3; c++) img.data[o + c] = Math.round(a[c] + (b[c] - a[c]) * t);
      img.data[o + 3] = 255;
    }
  ctx.putImageData(img, 0, 0);
  let diag = 0, off = 0;
  for (let i = 0; i < j.size; i++) for (let k = 0; k < j.size; k++) (i === k ? diag += j.values[i][k] : off += Math.abs(j.values[i][k]));
  text($("m-size"), `${j.size}×${j.size}`);
  text($("m-step"), `step ${fmt(j.step)} · ${j.size} of ${j.dim} dimensions · block mean c_ii ${fmt(diag / j.size, 3)}, mean |c_ij| ${fmt(off / (j.size * (j.size - 1)), 3)}`);
}

// ---- versions ----

async function loadVersions() {
  const j = await getJson("/checkpoints");
  const rows = [...j.checkpoints].sort((a, b) => b.version - a.version);
  const body = $("versions-body");
  body.replaceChildren();
  for (const c of rows.slice(0, VERSION_ROWS)) {
    const q = c.quality || {};
    const tr = el("tr", c.serving ? "serving" : "");
    tr.append(el("td", "", String(c.version) + (c.serving ? " (serving)" : "")), el("td", "", fmt(c.step)),
      el("td", "", fmt(c.loss)), el("td", "", q.knn20 === undefined ? "–" : pct(q.knn20)),
      el("td", "", q.pixels_knn20 === undefined ? "–" : pct(q.pixels_knn20)),
      el("td", "", fmt(q.effective_rank, 3)));
    const dec = c.quality ? (q.accepted ? "accepted" : "refused") : (c.serving ? "serving" : "not decided");
    tr.append(el("td", c.quality ? dec : "", dec), el("td", "", q.reason || ""));
    body.append(tr);
  }
  text($("versions-note"), rows.length > VERSION_ROWS ? `The ${VERSION_ROWS} newest of ${rows.length} kept versions.` : "");
  const asc = [...rows].reverse().filter((c) => c.quality);
  const n = lineChart($("chart-acc"), [
    { label: "k-NN-20 of the version", color: "#1f6feb", dots: true, points: asc.map((c) => [c.version, c.quality.knn20]) },
    { label: "raw pixels", color: "#888", dash: [4, 3], points: asc.map((c) => [c.version, c.quality.pixels_knn20]) },
  ], { title: "monitor accuracy by version", empty: "no version scored yet (needs labelled images)" });
  $("chart-acc").dataset.points = String(n);
}

// ---- tiles: Browse, neighbours, search ----

function labelOf(meta, keyName) {
  if (!meta || typeof meta !== "object") return "";
  const v = meta[keyName];
  return v === undefined || v === null ? "" : String(v);
}

// A tile for an image id: its thumbnail (a blob: URL), a caption set as text, a click handler.
function tile(bucket, id, caption, title, onClick) {
  const t = el("div", "tile");
  t.tabIndex = 0;
  t.dataset.id = String(id);
  const img = el("img");
  img.alt = "image " + id;
  t.append(img, el("span", "cap", caption));
  t.title = title;
  blobUrl(`/images/${id}/thumbnail?size=128`, bucket).then((u) => { img.src = u; }).catch(() => { img.alt = "(gone)"; });
  if (onClick) {
    t.addEventListener("click", () => onClick(id));
    t.addEventListener("keydown", (e) => { if (e.key === "Enter") onClick(id); });
  }
  return t;
}

function labelKey() { return $("label-key").textContent || "label"; }

async function loadBrowse(after) {
  const f = $("filter").value.trim();
  let q = `/images?limit=${PAGE}&after=${after}`;
  if (f) q += "&filter=" + encodeURIComponent(f);
  let j;
  try {
    j = await getJson(q);
  } catch (e) {
    text($("browse-note"), e.code === "bad_filter" ? "Filter refused: " + e.message : "Could not list images: " + e.message);
    return;
  }
  revokeAll("browse");
  state.browseAt = after;
  const grid = $("browse-grid");
  grid.replaceChildren();
  for (const im of j.images) {
    const lab = labelOf(im.meta, labelKey());
    grid.append(tile("browse", im.id, lab ? `${im.id} · ${lab}` : String(im.id),
      `${im.width}×${im.height} ${im.media_type}\n${JSON.stringify(im.meta)}`, showNeighbours));
  }
  state.browseNext = j.next;
  $("browse-next").disabled = j.next === null;
  text($("browse-note"), j.images.length ? `${j.images.length} images from id ${j.images[0].id}` +
    (f ? " matching the filter" : "") + ". Click one to see its neighbours." : "No images" + (f ? " match the filter." : " yet."));
}

function resultTiles(bucket, gridId, results) {
  revokeAll(bucket);
  const grid = $(gridId);
  grid.replaceChildren();
  for (const r of results) {
    const lab = labelOf(r.meta, labelKey());
    grid.append(tile(bucket, r.id, `${r.score.toFixed(3)}${lab ? " · " + lab : ""}`,
      `image ${r.id}, cosine ${r.score.toFixed(4)}\n${JSON.stringify(r.meta)}`, showNeighbours));
  }
}

async function showNeighbours(id) {
  $("neighbours").hidden = false;
  text($("nb-id"), String(id));
  try {
    const j = await getJson(`/neighbors/${id}?k=${K}`);
    resultTiles("nb", "nb-grid", j.results);
  } catch (e) {
    $("nb-grid").replaceChildren(el("p", "error", e.code === "no_vector" || e.status === 409 ?
      "This image has no vector yet (it is being embedded): try again in a moment." : "Neighbours failed: " + e.message));
  }
}

function mediaTypeOf(file) {
  if (file.type) return file.type;
  return /\.pgm$/i.test(file.name) ? "image/x-portable-graymap" : "application/octet-stream";
}

async function searchFile(file) {
  text($("search-note"), `Searching with ${file.name} (${fmt(file.size)} bytes)…`);
  try {
    const r = await api(`/search?k=${K}`, { method: "POST", body: file, headers: { "Content-Type": mediaTypeOf(file) } });
    const j = await r.json();
    resultTiles("search", "search-results", j.results);
    text($("search-note"), `${j.results.length} nearest images to ${file.name} (model version ${j.model_version}); cosine similarity under each.`);
  } catch (e) {
    text($("search-note"), "Search failed: " + e.message);
  }
}

function setupSearch() {
  const d = $("drop");
  d.addEventListener("dragover", (e) => { e.preventDefault(); d.classList.add("over"); });
  d.addEventListener("dragleave", () => d.classList.remove("over"));
  d.addEventListener("drop", (e) => {
    e.preventDefault();
    d.classList.remove("over");
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) searchFile(f);
  });
  $("search-file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) searchFile(f); });
}

function setupBrowse() {
  $("filter-form").addEventListener("submit", (e) => { e.preventDefault(); loadBrowse(0); });
  $("browse-first").addEventListener("click", () => loadBrowse(0));
  $("browse-next").addEventListener("click", () => {
    if (state.browseNext !== null) loadBrowse(state.browseNext);
  });
}

// ---- the refresh loop ----

let inFlight = false;
async function refresh() {
  if (inFlight || (state.readsNeedKey && !key())) return;
  inFlight = true;
  try {
    const s = await getJson("/status");
    showStatus(s);
    await Promise.all([loadLog(s), loadMatrix(), loadVersions()]);
    $("conn").className = "pill ok";
    text($("conn"), "live · updated " + new Date().toLocaleTimeString());
    document.body.dataset.ready = "1";
  } catch (e) {
    $("conn").className = "pill bad";
    text($("conn"), e.status ? `error ${e.status}: ${e.code}` : "server unreachable");
  } finally {
    inFlight = false;
  }
}

async function refreshAll() {
  await refresh();
  if (!state.readsNeedKey || key()) loadBrowse(state.browseAt);
}

async function main() {
  setupKey();
  setupSearch();
  setupBrowse();
  const cfg = await (await fetch("/ui/config.json", { cache: "no-store" })).json();
  state.readsNeedKey = cfg.reads_need_key;
  if (key()) $("forget-key").hidden = false;
  if (state.readsNeedKey && !key()) askKey();
  await refreshAll();
  setInterval(refresh, POLL_MS);
}

main();
