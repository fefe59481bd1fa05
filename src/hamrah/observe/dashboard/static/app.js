// hamrah dashboard: one page, four views, fed by server-sent events. No dependencies, no CDN.
// Every value from the server is written with textContent or as an SVG attribute: never as HTML.
"use strict";
const NS = "http://www.w3.org/2000/svg";
const PHASES = ["selection", "download", "training", "upload", "aggregation", "commit", "reporting", "eval"];
const S = { runs: [], run: null, live: null, selected: null, compare: new Set(), stream: null };

function el(tag, attrs, ...kids) {
  const e = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
const $ = (id) => document.getElementById(id);
const num = (v) => typeof v === "number" && isFinite(v);
const fmt = (v, d = 4) => (num(v) ? (Number.isInteger(v) ? String(v) : v.toFixed(d)) : "-");
const bytes = (v) => (num(v) ? (v >= 1048576 ? (v / 1048576).toFixed(2) + " MiB" : (v / 1024).toFixed(1) + " KiB") : "-");
const eps = (r) => [r.epsilon, r.privacy_epsilon, r.epsilon_spent].find(num);
const lo = (xs) => xs.reduce((a, b) => (b < a ? b : a), Infinity);  // Math.min(...xs) overflows the stack on long runs
const hi = (xs) => xs.reduce((a, b) => (b > a ? b : a), -Infinity);
const dec = (n) => { try { return decodeURIComponent(n); } catch (e) { return n; } };
const names = (list) => list.map(encodeURIComponent).join(",");  // each name encoded: a name may hold a comma

function phasesOf(r) {
  const t = r.phases && typeof r.phases === "object" ? r.phases : {};
  const out = {};
  for (const p of PHASES) { const v = [t[p], t[p + "_s"], r[p + "_s"]].find(num); if (v !== undefined) out[p] = v; }
  return out;
}

// A line chart: series = [{name, points: [[x, y], ...]}]; optional horizontal budget line.
function lineChart(id, series, opts = {}) {
  const box = $(id), W = opts.width || 420, H = 220, L = 46, B = 24, T = 8, R = 10;
  box.replaceChildren();
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) { box.append(el("p", {}, opts.empty || "no data in this run")); return; }
  let xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  if (num(opts.budget)) ys = ys.concat([opts.budget]);
  const x0 = lo(xs), x1 = Math.max(hi(xs), x0 + 1), y0 = Math.min(0, lo(ys)), y1 = Math.max(hi(ys), y0 + 1e-9);
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - B - T);
  const svg = el("svg:svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  svg.append(el("svg:line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
             el("svg:line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (const y of [y0, (y0 + y1) / 2, y1]) svg.append(el("svg:text", { x: 2, y: sy(y) + 3 }, fmt(y, 3)));
  svg.append(el("svg:text", { x: L, y: H - 6 }, `round ${x0}`), el("svg:text", { x: W - R - 60, y: H - 6 }, `round ${x1}`));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    svg.append(el("svg:path", { class: `line c${i % 8}`, d, "data-series": s.name }));
  });
  if (num(opts.budget)) svg.append(el("svg:line", { class: "budget", x1: L, x2: W - R, y1: sy(opts.budget), y2: sy(opts.budget) }));
  box.append(svg, legend(series.map((s, i) => [s.name, i, s.points.length]).filter((e) => e[2]).map((e) => e.slice(0, 2))));
}

function legend(entries) {  // [name, colour index]: a series' colour stays its own when others are empty
  const div = el("div", { class: "legend" });
  entries.forEach(([n, i]) => {
    const sw = el("svg:svg", { width: 10, height: 10 }, el("svg:rect", { class: `c${i % 8}`, width: 10, height: 10 }));
    div.append(el("span", {}, sw, " " + n));
  });
  return div;
}

function series(recs, key) {
  return recs.filter((r) => num(r[key]) && num(r.round)).map((r) => [r.round, r[key]]);
}

function table(id, head, rows, attrs) {
  const t = $(id);
  t.replaceChildren(el("tr", {}, ...head.map((h, i) => el("th", { class: i ? "" : "l" }, h))));
  rows.forEach((row, k) => t.append(el("tr", attrs ? attrs(k) : {}, ...row.map((c, i) => el("td", { class: i ? "" : "l" }, c)))));
}

function renderOverview() {
  const run = S.run, recs = (run && run.records) || [], live = S.live;
  const last = recs.length ? recs[recs.length - 1] : {};
  const status = run ? run.status : "-";
  $("stat-status").textContent = status;
  $("stat-status").className = "v status-" + status;
  $("stat-round").textContent = run ? String(run.rounds) : "-";
  const acc = [...recs].reverse().find((r) => num(r.test_accuracy));
  $("stat-accuracy").textContent = acc ? fmt(acc.test_accuracy) : "-";
  const e = [...recs].reverse().map(eps).find(num);
  $("stat-epsilon").textContent = num(e) ? fmt(e, 3) : "-";
  const budget = run && run.config && run.config.privacy ? run.config.privacy.target_epsilon : null;
  $("stat-budget").textContent = num(budget) ? fmt(budget, 3) : "-";
  $("stat-connected").textContent = live ? String(live.connected) : "-";
  for (const k of ["selected", "reported", "dropped"]) $("stat-" + k).textContent = fmt(last[k]);
  const err = $("error-box");
  err.hidden = !(run && run.error);
  err.textContent = run && run.error ? "failed: " + run.error : "";
  lineChart("chart-accuracy", [{ name: "test accuracy", points: series(recs, "test_accuracy") },
                               { name: "device accuracy", points: series(recs, "device_accuracy") },
                               // personalized runs: each client's own model, and the global one, on its held-out examples
                               { name: "own model, own examples", points: series(recs, "personal_accuracy").concat(series(recs, "device_personal_accuracy")) },
                               { name: "global model, own examples", points: series(recs, "local_accuracy").concat(series(recs, "device_local_accuracy")) }]);
  lineChart("chart-loss", [{ name: "test loss", points: series(recs, "test_loss") },
                           { name: "train loss", points: series(recs, "train_loss") },
                           { name: "device loss", points: series(recs, "device_loss") }]);
  lineChart("chart-epsilon", [{ name: "epsilon", points: recs.filter((r) => num(eps(r))).map((r) => [r.round, eps(r)]) }],
            { budget, empty: "no epsilon in this run's records (no DP accounting, or one the server cannot prove)" });
  $("log").textContent = ((run && run.log) || []).join("\n") || "(no log lines)";
  $("log").scrollTop = $("log").scrollHeight;  // the newest lines in view
  $("config").textContent = run && run.config ? JSON.stringify(run.config, null, 2) : "(no config)";
}

function renderRounds() {
  const recs = (S.run && S.run.records) || [], live = S.live;
  const lr = $("live-round");
  lr.replaceChildren();
  if (live) for (const [k, v] of Object.entries(live.live)) lr.append(el("div", { class: "card" }, el("div", { class: "k" }, "live " + k), el("div", { class: "v", id: "live-" + k }, String(v))));
  const present = PHASES.filter((p) => recs.some((r) => p in phasesOf(r)));
  const split = present.some((p) => ["download", "training", "upload"].includes(p));
  phaseChart(recs.slice(-60), present.filter((p) => !(split && p === "reporting")));  // reporting = download + training + upload
  const reasons = live ? live.counters.refusals || {} : (S.run && S.run.summary && S.run.summary.refusals) || {};
  table("refusals", ["reason", "count"], Object.entries(reasons).sort((a, b) => b[1] - a[1]).map(([r, n]) => [r, n]));
  const cols = ["round", "selected", "reported", "dropped", "aborted", "failed", "refused", "clipped", "bytes_up", "bytes_down",
                "test_accuracy", "epsilon"].filter((c) => c === "round" || recs.some((r) => c in r || (c === "epsilon" && num(eps(r)))));
  const rows = [...recs].reverse().slice(0, 300).map((r) => cols.map((c) =>
    c.startsWith("bytes") ? bytes(r[c]) : c === "epsilon" ? fmt(eps(r), 3) : fmt(r[c])).concat(
    present.map((p) => fmt(phasesOf(r)[p], 2))));
  table("rounds-table", cols.concat(present.map((p) => p + " s")), rows, (k) => ({ "data-round": String(recs[recs.length - 1 - k].round) }));
  trafficTable(recs);
}

// Bytes each Aggregator's devices moved per round (server records' bytes_by_aggregator: key -> [up, down]).
function trafficTable(recs) {
  const byAgg = (r) => (r.bytes_by_aggregator && typeof r.bytes_by_aggregator === "object" ? r.bytes_by_aggregator : {});
  const keys = [...new Set(recs.flatMap((r) => Object.keys(byAgg(r))))].sort();
  const label = (k) => (/^\d+$/.test(k) ? "Aggregator " + k : k);
  const rows = [...recs].reverse().slice(0, 50).map((r) => [fmt(r.round)].concat(keys.map((k) => {
    const v = byAgg(r)[k];
    return Array.isArray(v) ? bytes(v[0]) + " / " + bytes(v[1]) : "-";
  })));
  table("traffic-table", ["round"].concat(keys.map(label)), keys.length ? rows : []);
}

function phaseChart(recs, present) {
  const box = $("chart-phases"), W = 860, H = 200, L = 40, B = 20;
  box.replaceChildren();
  $("phase-legend").replaceChildren(legend(present.map((n, i) => [n, i])));
  if (!recs.length || !present.length) { box.append(el("p", {}, "no phase timings in these records")); return; }
  const tot = recs.map((r) => present.reduce((a, p) => a + (phasesOf(r)[p] || 0), 0));
  const top = Math.max(hi(tot), 1e-9), bw = (W - L) / recs.length;
  const svg = el("svg:svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  svg.append(el("svg:text", { x: 2, y: 10 }, fmt(top, 2) + " s"));
  recs.forEach((r, i) => {
    let y = H - B;
    const ph = phasesOf(r);
    present.forEach((p, j) => {
      const h = ((ph[p] || 0) / top) * (H - B - 12);
      y -= h;
      svg.append(el("svg:rect", { class: `c${j % 8}`, x: L + i * bw, y, width: Math.max(bw - 1, 1), height: h },
                    el("svg:title", {}, `round ${r.round}: ${p} ${fmt(ph[p], 3)} s`)));
    });
  });
  box.append(svg);
}

function renderDevices() {
  const live = S.live;
  for (const id of ["dev-connected", "dev-eligible", "dev-known", "dev-checkins"]) $(id).textContent = "-";
  if (!live) {
    table("devices-table", ["device data is shown only by a running server's dashboard (hamrah server with [dashboard])"], []);
    table("outcomes", ["outcome", "count"], []); table("events-table", ["time", "event"], []);
    return;
  }
  $("dev-connected").textContent = String(live.connected);
  $("dev-eligible").textContent = String(live.eligible);
  $("dev-known").textContent = String(live.known_devices);
  $("dev-checkins").textContent = String((live.counters.checkins || {})[""] || 0);
  const oc = Object.assign({}, live.counters.selections || {});
  for (const [k, v] of Object.entries(live.counters.reports || {})) oc["report " + k] = v;
  table("outcomes", ["outcome", "count"], Object.entries(oc));
  const ago = (t) => (num(t) ? fmt(live.now - t, 1) + " s ago" : "never");
  table("devices-table", ["device", "last check-in", "eligible", "check-ins", "tasks", "reported", "aborted", "failed", "refused", "last"],
        live.devices.slice(0, 300).map((d) => [d.key, ago(d.last_checkin), d.eligible === null ? "-" : d.eligible ? "yes" : "no",
                                               d.checkins, d.tasks, d.reported, d.aborted, d.failed, d.refused, d.last]));
  table("events-table", ["when", "event", "device", "detail"],
        [...live.events].reverse().map((e) => [ago(e[0]), e[1], e[2], e[3]]));
}

async function renderCompare() {
  const list = $("compare-list");
  list.replaceChildren(...S.runs.map((r) => {
    const box = el("input", { type: "checkbox", value: r.name });
    box.checked = S.compare.has(r.name);
    box.addEventListener("change", () => { box.checked ? S.compare.add(r.name) : S.compare.delete(r.name); renderCompare(); });
    return el("label", {}, box, ` ${r.name} (${r.status}, ${r.kind === "lab" ? r.cells + " cells" : r.rounds + " rounds"})`);
  }));
  const ticked = [...S.compare];
  if (!ticked.length) {
    lineChart("chart-compare", [], { width: 860, empty: "tick runs above" });
    table("compare-table", ["run"], []); $("chart-lab").replaceChildren();
    return;
  }
  const key = JSON.stringify(ticked);
  if (!S.compared || S.compared.key !== key) {  // the page's first state carries the first comparison
    const res = await fetch("/api/compare?names=" + encodeURIComponent(names(ticked)), { credentials: "same-origin" });
    if (!res.ok) return;
    const got = (await res.json()).runs;
    if (JSON.stringify([...S.compare]) !== key) return;  // ticked again meanwhile: a newer call draws
    S.compared = { key, runs: got };
  }
  const runs = S.compared.runs, metric = $("compare-metric").value;
  labChart(runs, metric);
  const pick = (r) => (metric === "epsilon" ? eps(r) : r[metric]);
  lineChart("chart-compare", runs.map((r) => ({ name: r.name, points: r.records.filter((x) => num(pick(x))).map((x) => [x.round, pick(x)]) })), { width: 860 });
  table("compare-table", ["run", "status", "rounds", "final " + metric, "best accuracy"], runs.map((r) => {
    const v = r.records.map(pick).filter(num);
    return [r.name, r.status, r.rounds, fmt(v[v.length - 1]), fmt(r.summary && r.summary.best_accuracy)];
  }));
}

// A lab's cells: one group of bars per defence, one bar per attack (mean over seeds), y in [0, 1].
function labChart(runs, metric) {
  const box = $("chart-lab");
  box.replaceChildren();
  const key = ["main_accuracy", "attack_success"].includes(metric) ? metric : "main_accuracy";
  for (const r of runs.filter((x) => x.kind === "lab" && (x.cell_rows || []).length)) {
    const vals = new Map();  // defence -> attack -> values (Maps: a name such as "__proto__" is a name)
    for (const c of r.cell_rows) {
      if (!num(c[key])) continue;
      const d = String(c.defence), a = String(c.attack);
      if (!vals.has(d)) vals.set(d, new Map());
      if (!vals.get(d).has(a)) vals.get(d).set(a, []);
      vals.get(d).get(a).push(c[key]);
    }
    const defs = [...vals.keys()], atts = [...new Set(r.cell_rows.map((c) => String(c.attack)))];
    const W = 860, H = 230, L = 36, B = 22, gw = (W - L) / Math.max(defs.length, 1), bw = gw / (atts.length + 1);
    const svg = el("svg:svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    svg.append(el("svg:text", { x: 2, y: 10 }, "1.0"), el("svg:text", { x: 2, y: H - B }, "0"));
    defs.forEach((d, i) => {
      svg.append(el("svg:text", { x: L + i * gw, y: H - 6 }, d));
      atts.forEach((a, j) => {
        const got = vals.get(d).get(a) || [];
        const v = got.reduce((s, x, _, xs) => s + x / xs.length, 0);
        if (!got.length) return;
        const h = Math.max(0, Math.min(1, v)) * (H - B - 12);
        svg.append(el("svg:rect", { class: `c${j % 8}`, x: L + i * gw + j * bw, y: H - B - h, width: Math.max(bw - 1, 1), height: h },
                      el("svg:title", {}, `${d} / ${a}: ${fmt(v)}`)));
      });
    });
    box.append(el("h2", {}, `${r.name}: ${key} by defence and attack (mean over seeds)`), svg, legend(atts.map((n, i) => [n, i])));
  }
}

function renderRunSelect() {
  const sel = $("run-select"), names = S.runs.map((r) => r.name);
  if (sel.options.length !== names.length || [...sel.options].some((o, i) => o.value !== names[i])) {
    sel.replaceChildren(...S.runs.map((r) => el("option", { value: r.name }, r.name === "." ? "(this server)" : r.name)));
  }
  if (S.selected !== null) sel.value = S.selected;
}

// A run of more rounds than the server sends (runs.SHOWN_RECORDS): say what the charts are drawn from.
function thinNote() {
  const run = S.run, recs = (run && run.records) || [];
  const total = run && num(run.records_total) ? run.records_total : recs.length;
  for (const id of ["thin-note", "rounds-note"]) {
    $(id).hidden = total <= recs.length;
    $(id).textContent = total > recs.length ? `${total} records read (from round ${fmt(recs[0].round)}); drawn from ${recs.length} of them: the last ${Math.min(300, recs.length)} all, earlier ones evenly spaced` : "";
  }
}

function page() { return (location.hash || "#overview").slice(1); }

function render() {
  const p = page();
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + p;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === p);
  renderRunSelect();
  thinNote();
  if (p === "overview") renderOverview();
  else if (p === "rounds") renderRounds();
  else if (p === "devices") renderDevices();
  else if (p === "compare") renderCompare();
  document.body.dataset.ready = "1";
}

// One state message (the page's embedded first state, then each server-sent event).
function applyState(st) {
  S.runs = st.runs; S.live = st.live;
  if ("run" in st) S.run = st.run;  // sent only when the run's files changed
  const listed = S.runs.map((r) => r.name);
  if (S.selected === null || !listed.includes(S.selected)) {  // none named, or deleted / renamed while open
    const next = st.run && listed.includes(st.run.name) ? st.run.name : (listed.length ? listed[0] : null);
    if (S.selected !== null && S.stream) { S.selected = next; select(); return; }
    S.selected = next;
  }
  if (!S.compareInit && S.runs.length) {  // ?compare=a,b, else the first 8 runs
    S.compareInit = true;
    const given = new URLSearchParams(location.search).get("compare");
    (given ? given.split(",").map(dec) : S.runs.slice(0, 8).map((r) => r.name)).forEach((n) => S.compare.add(n));
  }
  if (st.compare) S.compared = { key: JSON.stringify(st.compare.map((r) => r.name)), runs: st.compare };
  else if ("run" in st) S.compared = null;  // files changed: the comparison is fetched again
  render();
}

function connect() {
  if (S.stream) S.stream.close();
  const q = S.selected !== null ? "?run=" + encodeURIComponent(S.selected) : "";
  const es = new EventSource("/api/stream" + q, { withCredentials: true });
  S.stream = es;
  es.addEventListener("state", (ev) => {
    $("conn").textContent = "live"; $("conn").className = "badge ok";
    applyState(JSON.parse(ev.data));
  });
  es.onerror = () => {
    $("conn").textContent = "disconnected: retrying"; $("conn").className = "badge bad";
    if (es.readyState === EventSource.CLOSED && S.stream === es) setTimeout(retry, 2000);  // refused (a run gone): no retry of its own
  };
}

// The stream was refused: learn the runs again (the selected one may be gone), then reconnect.
async function retry() {
  try {
    const res = await fetch("/api/runs", { credentials: "same-origin" });
    if (res.ok) { const st = await res.json(); S.runs = st.runs; if (!st.runs.some((r) => r.name === S.selected)) S.selected = st.runs.length ? st.runs[0].name : null; }
  } catch (e) { /* the server is away: try again */ }
  connect();
}

// Show the run S.selected: its name in the address (a reload or a link keeps it), and its stream.
function select() {
  const url = new URL(location.href);
  if (S.selected === null) url.searchParams.delete("run"); else url.searchParams.set("run", S.selected);
  history.replaceState(null, "", url);
  S.run = null;
  render();
  connect();
}

function showError(msg) { $("conn").textContent = "page error: " + msg; $("conn").className = "badge bad"; }
window.addEventListener("error", (e) => showError(e.message));
window.addEventListener("unhandledrejection", (e) => showError(String(e.reason)));
$("run-select").addEventListener("change", (e) => { S.selected = e.target.value; select(); });
$("compare-metric").addEventListener("change", renderCompare);
window.addEventListener("hashchange", render);
const want = new URLSearchParams(location.search).get("run");
if (want !== null) S.selected = want;
const first = $("initial");  // the state when the page was served: drawn before any event arrives
if (first) applyState(JSON.parse(first.textContent));
connect();
