// The evalfleet viewer: one page, hash routes, every figure read from the results API of the
// server that serves this file. Data is put into the page as text nodes only, never as HTML.
"use strict";

const API = "/v2/gen-ai";
const view = document.getElementById("view");
let timer = null;          // the current page's refresh, if it has one
let lastProgress = {};     // run id -> [time, done]: the rate shown while a run is going

// -- helpers ---------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, method = "GET") {
  const response = await fetch(path, { method, credentials: "same-origin", headers: { accept: "application/json" } });
  if (response.status === 401) {
    location.hash = "#/login";
    throw new ApiError(401, "sign in first");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.message || response.statusText);
  return body;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const one of [].concat(value)) if (one !== null && one !== undefined && one !== "") search.append(key, one);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

const fmt = {
  num: (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits)),
  pct: (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"),
  cost: (v) => (v === null || v === undefined ? "n/a" : "$" + Number(v).toFixed(4)),
  ms: (v) => (v === null || v === undefined ? "–" : Math.round(v) + " ms"),
  int: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US")),
  duration: (s) => (s === null || s === undefined ? "–" : s < 60 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min"),
  time: (t) => (t ? new Date(t).toLocaleString() : "–"),
  short: (text, n = 120) => { const s = text === null || text === undefined ? "" : String(text); return s.length > n ? s.slice(0, n) + "…" : s; },
};

function statusClass(status) {
  if (/success|SUCCESSFUL$/.test(status) && !/PARTIALLY/.test(status)) return "ok";
  if (/error|FAILED|cancel/i.test(status)) return "bad";
  return "warn";
}

function metricsText(metrics) {
  return Object.entries(metrics || {}).map(([label, values]) => {
    const main = values.accuracy ?? values.mean;
    const stderr = values.stderr;
    return `${label} ${fmt.num(main)}${stderr === null || stderr === undefined ? "" : " ± " + fmt.num(stderr)}`;
  }).join("; ");
}

function progressBar(done, total) {
  const bar = el("div", { class: "bar", title: `${done} of ${total}` }, el("span"));
  bar.firstChild.style.width = total ? Math.min(100, (100 * done) / total) + "%" : "0";
  return bar;
}

function pager(paging, go) {
  const { page, pages, total } = paging;
  const jump = el("input", { type: "number", min: 1, max: pages, value: page, "aria-label": "page", size: 6 });
  return el("div", { class: "pager" },
    el("button", { disabled: page <= 1, onclick: () => go(page - 1) }, "‹ Previous"),
    el("span", {}, `page ${fmt.int(page)} of ${fmt.int(pages)} (${fmt.int(total)})`),
    el("button", { disabled: page >= pages, onclick: () => go(page + 1) }, "Next ›"),
    jump, el("button", { onclick: () => go(Math.max(1, Math.min(pages, Number(jump.value) || 1))) }, "Go"));
}

function card(label, value, cls) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value " + (cls || "") }, value));
}

function show(...nodes) {
  const kept = nodes.flat(Infinity).filter((node) => node !== null && node !== undefined && node !== false);
  view.replaceChildren(...kept);
  const heading = kept.find((node) => node.tagName === "H1");
  document.title = (heading ? heading.textContent + " · " : "") + "evalfleet";
}

function failure(error) {
  return el("div", { class: "error", role: "alert" }, error.message || String(error));
}

// -- routes ------------------------------------------------------------------------------------

function route() {
  clearInterval(timer);
  timer = null;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, rawQuery] = hash.split("?");
  const params = new URLSearchParams(rawQuery || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const pages = { "": runsPage, login: loginPage, run: runPage, samples: samplesPage, sample: samplePage,
                  compare: comparePage, trends: trendsPage };
  const page = pages[parts[0] || ""];
  if (!page) return show(failure(new Error("no such page")));
  page(parts.slice(1), params).catch((error) => { if (error.status !== 401) show(failure(error)); });
}

// -- sign in -----------------------------------------------------------------------------------

async function loginPage(_parts, params) {
  show(el("h1", {}, "Sign in"),
    params.get("failed") ? el("div", { class: "error", role: "alert" }, "That token is not valid (or was revoked).") : null,
    el("form", { class: "login", method: "post", action: "/ui/login" },
      el("label", { for: "token" }, "API token (create one with `evalfleet token create`)"),
      el("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true }),
      el("button", { type: "submit" }, "Sign in")),
    el("p", { class: "muted" }, "The token is kept in an HttpOnly cookie for this server only."));
}

// -- runs --------------------------------------------------------------------------------------

async function runsPage(_parts, params) {
  const filters = { evaluation_key: params.get("evaluation_key"), status: params.get("status"),
                    tag: params.get("tag"), model: params.get("model") };
  const page = Number(params.get("page") || 1);
  const form = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(event.target).entries());
    location.hash = "#/" + query({ ...data, page: 1 });
  } },
    ...["evaluation_key", "tag", "model"].map((name) =>
      el("label", {}, name.replace("_", " "), el("input", { name, value: filters[name] || "" }))),
    el("label", {}, "status", el("select", { name: "status" },
      ["", "running", "success", "error", "cancelled", "cancelling"].map((s) =>
        el("option", { value: s, selected: s === (filters.status || "") }, s || "any")))),
    el("button", { type: "submit" }, "Filter"));
  const table = el("table", { id: "runs" });
  const pagerBox = el("div");
  show(el("h1", {}, "Runs"), form, table, pagerBox);

  async function refresh() {
    const data = await api(`${API}/runs${query({ ...filters, page, per_page: 20 })}`);
    const now = Date.now() / 1000;
    table.replaceChildren(
      el("thead", {}, el("tr", {}, ["run", "evaluation", "status", "progress", "rate", "errors", "duration",
        "models", "cost", "star metric", "created"].map((h) => el("th", {}, h)))),
      el("tbody", {}, data.runs.map((run) => {
        const before = lastProgress[run.run_id];
        const rate = before && run.status === "running" && now > before[0] ? (run.done - before[1]) / (now - before[0]) : null;
        lastProgress[run.run_id] = [now, run.done];
        return el("tr", { "data-run": run.run_id },
          el("td", {}, el("a", { href: `#/run/${run.run_id}` }, run.run_id.slice(0, 8))),
          el("td", {}, el("a", { href: `#/trends/${encodeURIComponent(run.evaluation)}` }, run.evaluation)),
          el("td", { class: statusClass(run.status) }, run.status),
          el("td", {}, progressBar(run.done, run.samples), `${fmt.int(run.done)} / ${fmt.int(run.samples)}`),
          el("td", { class: "num" }, rate === null ? "–" : rate.toFixed(1) + "/s"),
          el("td", { class: "num" + (run.errors ? " bad" : "") }, fmt.int(run.errors)),
          el("td", { class: "num" }, fmt.duration(run.duration_s)),
          el("td", {}, run.models.join(", ")),
          el("td", { class: "num" }, fmt.cost(run.cost_usd)),
          el("td", {}, run.starred ? `${run.passed} of ${run.starred} passed` : "–"),
          el("td", {}, fmt.time(run.created_at)));
      })));
    pagerBox.replaceChildren(pager(data.meta, (p) => { location.hash = "#/" + query({ ...filters, page: p }); }));
    return data.runs.some((run) => run.status === "running" || run.status === "cancelling");
  }

  if (await refresh()) timer = setInterval(() => refresh().catch(() => {}), 2000);
}

// -- a run -------------------------------------------------------------------------------------

async function runPage([runId]) {
  const report = await api(`${API}/runs/${encodeURIComponent(runId)}`);
  const chosen = new Set();
  const compareButton = el("button", { disabled: true, onclick: () => {
    location.hash = "#/compare" + query({ uuid: [...chosen] });
  } }, "Compare selected");
  const rows = report.task_results.map((t) => {
    const usage = t.usage || {};
    const top = t.error_summary && t.error_summary.most_frequent && t.error_summary.most_frequent[0];
    const logLinks = t.log_path ? [
      el("a", { href: `${API}/evaluation_runs/${t.uuid}/log` }, "log"), " · ",
      el("a", { href: `${API}/evaluation_runs/${t.uuid}/log?format=inspect` }, "Inspect .eval")] : ["–"];
    return el("tr", { "data-uuid": t.uuid },
      el("td", {}, el("input", { type: "checkbox", "aria-label": "compare " + t.key, onchange: (event) => {
        event.target.checked ? chosen.add(t.uuid) : chosen.delete(t.uuid);
        compareButton.disabled = chosen.size < 2;
      } })),
      el("td", {}, el("a", { href: `#/samples/${t.uuid}` }, t.display_name || t.key)),
      el("td", {}, t.model || "–"),
      el("td", { class: statusClass(t.status) }, t.status),
      el("td", {}, progressBar(t.done, t.samples), `${fmt.int(t.done)} / ${fmt.int(t.samples)}`),
      el("td", { class: "metrics" }, metricsText(t.metrics)),
      el("td", {}, t.star_metric ? `${t.star_metric.metric} ${fmt.num(t.star_metric.value)} vs ${t.star_metric.threshold}: `
        : "–", t.star_metric ? el("span", { class: t.star_metric.pass_status ? "ok" : "bad" },
          t.star_metric.pass_status ? "pass" : "fail") : null),
      el("td", { class: "num" + (t.errors ? " bad" : "") }, fmt.int(t.errors),
        top ? el("div", { class: "muted" }, fmt.short(`${top.count}× ${top.type}: ${top.message}`, 90)) : null),
      el("td", { class: "num" }, fmt.int(usage.input_tokens), " / ", fmt.int(usage.output_tokens)),
      el("td", { class: "num" }, fmt.cost(usage.cost_usd)),
      el("td", { class: "num" }, fmt.ms(usage.latency_p50_ms), " / ", fmt.ms(usage.latency_p95_ms)),
      el("td", {}, ...logLinks));
  });
  const duration = report.finished_at ? (new Date(report.finished_at) - new Date(report.created_at)) / 1000 : null;
  const benchmarks = el("div");
  show(
    el("h1", {}, `${report.display_name} `, el("span", { class: "muted" }, report.run_id)),
    el("div", { class: "cards" },
      card("status", report.status, statusClass(report.status)),
      card("evaluation", el("a", { href: `#/trends/${encodeURIComponent(report.evaluation)}` }, report.evaluation)),
      card("duration", fmt.duration(duration)),
      card("created", fmt.time(report.created_at)),
      report.retry_of ? card("retry of", el("a", { href: `#/run/${report.retry_of}` }, report.retry_of.slice(0, 8))) : null),
    report.error ? el("div", { class: "error" }, report.error) : null,
    el("h2", {}, "Task results"),
    el("table", { id: "task-results" },
      el("thead", {}, el("tr", {}, ["", "task result", "model", "status", "progress", "metrics (± stderr)",
        "star metric", "errors", "tokens in / out", "cost", "latency p50 / p95", "downloads"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)),
    el("p", {}, compareButton),
    benchmarks);
  if (report.status === "running" || report.status === "cancelling") {
    const first = report.task_results.find((t) => t.uuid);
    if (report.status === "running" && first) {
      benchmarks.append(el("p", {}, el("button", { id: "cancel", onclick: async (event) => {
        event.target.disabled = true;
        try {
          await api(`${API}/evaluation_runs/${first.uuid}/cancel`, "POST");
          route();
        } catch (error) { benchmarks.append(failure(error)); }
      } }, "Cancel this run")));
    }
    timer = setInterval(() => { if (location.hash.startsWith(`#/run/${runId}`)) route(); }, 3000);
    return;
  }
  const found = await api(`${API}/runs/${encodeURIComponent(report.run_id)}/benchmark`).catch(() => ({ benchmarks: [] }));
  for (const doc of found.benchmarks) benchmarks.append(benchmarkChart(doc));
}

function frontier(points) {
  // The best-value frontier: sorted by cost, the models no cheaper one matches or beats.
  const sorted = points.filter((p) => p.cost !== null && p.score !== null).sort((a, b) => a.cost - b.cost);
  const out = [];
  for (const p of sorted) if (!out.length || p.score > out[out.length - 1].score) out.push(p);
  return out;
}

function benchmarkChart(doc) {
  const points = Object.entries(doc.results).map(([key, r]) => ({
    key, score: r.overall_score, cost: r.cost_analysis ? r.cost_analysis.total_cost : null }));
  const priced = points.filter((p) => p.cost !== null && p.score !== null);
  const box = el("section", { class: "benchmark" }, el("h2", {}, `Benchmark: ${doc.task}`),
    el("p", {}, `best overall: ${doc.comparison.best_overall || "–"}; best value: ${doc.comparison.best_value || "–"}`));
  const table = el("table", {}, el("thead", {}, el("tr", {}, ["model", "score", "cost"].map((h) => el("th", {}, h)))),
    el("tbody", {}, points.map((p) => el("tr", {}, el("td", {}, p.key), el("td", { class: "num" }, fmt.pct(p.score)),
      el("td", { class: "num" }, fmt.cost(p.cost))))));
  box.append(table);
  if (!priced.length) return box;
  const W = 560, H = 300, pad = 48;
  const maxCost = Math.max(...priced.map((p) => p.cost)) || 1;
  const x = (c) => pad + (W - 2 * pad) * (c / maxCost);
  const y = (s) => H - pad - (H - 2 * pad) * s;
  const chart = svg("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "score against cost" },
    svg("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: "#9ca3af" }),
    svg("line", { x1: pad, y1: pad, x2: pad, y2: H - pad, stroke: "#9ca3af" }),
    svg("text", { x: W / 2, y: H - 12 }, "cost (USD)"), svg("text", { x: 6, y: pad - 12 }, "score"),
    svg("polyline", { class: "frontier", fill: "none", stroke: "#15803d", "stroke-dasharray": "4 3",
      points: frontier(priced).map((p) => `${x(p.cost)},${y(p.score)}`).join(" ") }),
    priced.map((p) => [svg("circle", { class: "model", cx: x(p.cost), cy: y(p.score), r: 5, fill: "#1d4ed8" },
      svg("title", {}, `${p.key}: ${fmt.pct(p.score)} for ${fmt.cost(p.cost)}`)),
      svg("text", { x: x(p.cost) + 7, y: y(p.score) - 7 }, p.key)]));
  box.append(chart);
  return box;
}

// -- samples -------------------------------------------------------------------------------------

function outcomeOf(prompt) {
  if (prompt.error_description) return ["error", "bad"];
  const first = prompt.prompt_level_metric_results[0];
  if (!first || first.number_value === null || first.number_value === undefined) return ["unscored", "warn"];
  return first.number_value >= 1 ? ["correct", "ok"] : ["incorrect", "bad"];
}

async function samplesPage([uuid], params) {
  const state = { outcome: params.get("outcome") || "", search: params.get("search") || "",
                  sort: params.get("sort") || "position", page: Number(params.get("page") || 1) };
  const data = await api(`${API}/evaluation_runs/${uuid}/results${query({ ...state, sort: state.sort === "position" ? null : state.sort, per_page: 50 })}`);
  const run = data.evaluation_run;
  const go = (changes) => { location.hash = `#/samples/${uuid}` + query({ ...state, ...changes }); };
  const form = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    go({ ...Object.fromEntries(new FormData(event.target).entries()), page: 1 });
  } },
    el("label", {}, "outcome", el("select", { name: "outcome" }, ["", "correct", "incorrect", "error", "cached"].map((o) =>
      el("option", { value: o, selected: o === state.outcome }, o || "all")))),
    el("label", {}, "search id, input, output", el("input", { name: "search", value: state.search, type: "search" })),
    el("label", {}, "sort", el("select", { name: "sort" }, [["position", "position"], ["score", "score ↑"], ["-score", "score ↓"],
      ["latency", "latency ↑"], ["-latency", "latency ↓"]].map(([value, label]) =>
      el("option", { value, selected: value === state.sort }, label)))),
    el("button", { type: "submit" }, "Apply"));
  show(
    el("h1", {}, run.run_name, " ", el("span", { class: "muted" }, run.agent_name || "")),
    el("p", {}, el("a", { href: `#/run/${run.run_id}` }, "‹ run " + run.run_id.slice(0, 8)), " · ",
      `${fmt.int(run.completed_samples)} of ${fmt.int(run.total_samples)} evaluated, ${fmt.int(run.errored_samples)} errors`),
    form,
    el("table", { id: "samples" },
      el("thead", {}, el("tr", {}, ["#", "id", "epoch", "outcome", "score", "input", "output", "target", "latency", "cached"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, data.prompts.map((p) => {
        const [outcome, cls] = outcomeOf(p);
        const first = p.prompt_level_metric_results[0];
        return el("tr", { "data-position": p.prompt_id },
          el("td", { class: "num" }, el("a", { href: `#/sample/${uuid}/${p.prompt_id}` }, p.prompt_id)),
          el("td", {}, p.sample_id), el("td", { class: "num" }, p.epoch),
          el("td", { class: cls }, outcome),
          el("td", { class: "num" }, first ? fmt.num(first.number_value) : "–"),
          el("td", {}, fmt.short(p.input)), el("td", {}, fmt.short(p.output ?? p.error_description)),
          el("td", {}, fmt.short(p.ground_truth, 60)), el("td", { class: "num" }, fmt.ms(p.latency_ms)),
          el("td", {}, p.cached ? "yes" : ""));
      }))),
    pager(data.meta, (page) => go({ page })));
}

function text(value) {
  if (value === null || value === undefined) return "–";
  if (Array.isArray(value)) return value.map((m) => `${m.role}: ${m.content}`).join("\n\n");
  return String(value);
}

async function samplePage([uuid, position]) {
  const [data, runData] = await Promise.all([api(`${API}/evaluation_runs/${uuid}/samples/${position}`),
    api(`${API}/evaluation_runs/${uuid}`)]);
  const s = data.sample;
  const run = runData.evaluation_run;
  const scores = Object.entries(s.scores || {});
  show(
    el("h1", {}, `Sample ${s.id}`, s.epoch > 1 ? ` (epoch ${s.epoch})` : ""),
    el("p", {}, el("a", { href: `#/samples/${uuid}` }, "‹ " + run.run_name), " · ",
      el("a", { href: `#/sample/${uuid}/${Number(position) - 1}` }, "previous"), " · ",
      el("a", { href: `#/sample/${uuid}/${Number(position) + 1}` }, "next")),
    el("div", { class: "cards" },
      card("position", s.position), card("epoch", s.epoch),
      card("tokens in / out", s.usage ? `${s.usage.input_tokens} / ${s.usage.output_tokens}` : "–"),
      card("latency", fmt.ms(s.latency_ms)), card("model calls", `${s.model_calls} (${s.attempts} tries)`),
      card("cached", s.cached ? "yes" : "no"), card("worker", s.worker || "–")),
    s.error ? el("div", { class: "error", id: "sample-error" },
      `${s.error.type}: ${s.error.message}`, s.error.status_code ? ` (HTTP ${s.error.status_code})` : "",
      ` after ${s.error.attempts} attempt(s)`) : null,
    el("h2", {}, "Prompt sent"), el("pre", { id: "prompt" }, text(data.prompt_sent)),
    el("h2", {}, "Output"), el("pre", { id: "output" }, text(s.output)),
    el("h2", {}, "Target"), el("pre", { id: "target" }, text(s.target)),
    el("h2", {}, "Scores"),
    el("table", { id: "scores" }, el("thead", {}, el("tr", {}, ["scorer", "value", "answer", "explanation"].map((h) => el("th", {}, h)))),
      el("tbody", {}, scores.map(([label, score]) => el("tr", {}, el("td", {}, label), el("td", { class: "num" }, fmt.num(score.value)),
        el("td", {}, score.answer ?? "–"), el("td", {}, el("pre", {}, score.explanation ?? "–")))))),
    s.reduced_scores ? [el("h2", {}, "Over all epochs"), el("pre", {}, Object.entries(s.reduced_scores)
      .map(([label, score]) => `${label}: ${fmt.num(score.value)} (${score.explanation})`).join("\n"))] : null,
    (s.judges || []).length ? [el("h2", {}, "Judge calls"), el("pre", {}, s.judges.map((j) =>
      `${j.model}: ${j.calls} call(s), ${j.attempts} attempt(s), ${j.input_tokens} / ${j.output_tokens} tokens, ${fmt.ms(j.latency_ms)}`).join("\n"))] : null,
    Object.keys(s.metadata || {}).length ? [el("h2", {}, "Metadata"), el("pre", {}, JSON.stringify(s.metadata, null, 2))] : null);
}

// -- compare -----------------------------------------------------------------------------------

async function comparePage(_parts, params) {
  const uuids = params.getAll("uuid");
  const which = params.get("which") || "all";
  const page = Number(params.get("page") || 1);
  const picker = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    const list = String(data.get("uuids") || "").split(/[\s,]+/).filter(Boolean);
    location.hash = "#/compare" + query({ uuid: list, which: data.get("which"), page: 1 });
  } },
    el("label", {}, "evaluation run UUIDs (the first is the baseline)", el("input", { name: "uuids", size: 80, value: uuids.join(" ") })),
    el("label", {}, "show", el("select", { name: "which" }, [["all", "every sample"], ["differ", "where they differ"],
      ["first_right", "first right, another wrong"], ["first_wrong", "first wrong, another right"]].map(([value, label]) =>
      el("option", { value, selected: value === which }, label)))),
    el("button", { type: "submit" }, "Compare"));
  if (uuids.length < 2) {
    return show(el("h1", {}, "Compare"), picker,
      el("p", { class: "muted" }, "Pick two or more task results on a run's page, or paste their UUIDs."));
  }
  const data = await api(`${API}/compare${query({ uuid: uuids, which, page, per_page: 50 })}`);
  const sides = data.task_results;
  const cell = (c) => {
    if (!c) return el("td", { class: "muted" }, "–");
    if (c.error) return el("td", { class: "bad" }, "error: " + c.error);
    const right = c.score !== null && c.score >= 1;
    return el("td", { class: right ? "ok" : "bad" }, `${right ? "✓" : "✗"} ${fmt.num(c.score, 2)}`);
  };
  show(el("h1", {}, "Compare"), picker,
    el("h2", {}, "Task results"),
    el("table", { id: "sides" }, el("thead", {}, el("tr", {}, ["", "task result", "model", "done", "errors", "cost", "latency p50 / p95"].map((h) => el("th", {}, h)))),
      el("tbody", {}, sides.map((s, i) => el("tr", {}, el("td", {}, i === 0 ? "baseline" : `#${i + 1}`),
        el("td", {}, el("a", { href: `#/samples/${s.uuid}` }, s.display_name)), el("td", {}, s.model || "–"),
        el("td", { class: "num" }, fmt.int(s.done)), el("td", { class: "num" }, fmt.int(s.errors)),
        el("td", { class: "num" }, fmt.cost(s.cost_usd)), el("td", { class: "num" }, fmt.ms(s.latency_p50_ms), " / ", fmt.ms(s.latency_p95_ms)))))),
    el("h2", {}, "Metrics (difference from the baseline ± its standard error)"),
    el("table", { id: "deltas" }, el("thead", {}, el("tr", {}, ["metric", ...sides.map((s) => s.display_name)].map((h) => el("th", {}, h)))),
      el("tbody", {}, data.metrics.map((m) => el("tr", {}, el("td", {}, m.metric), m.values.map((v, i) => el("td", { class: "num" },
        fmt.num(v), i > 0 && m.deltas[i] !== null ? el("div", { class: m.deltas[i] > 0 ? "ok" : m.deltas[i] < 0 ? "bad" : "muted" },
          `${m.deltas[i] >= 0 ? "+" : ""}${fmt.num(m.deltas[i])}${m.delta_stderrs[i] === null ? "" : " ± " + fmt.num(m.delta_stderrs[i])}`) : null)))))),
    el("h2", {}, `Samples (${fmt.int(data.total)})`),
    el("table", { id: "matrix" }, el("thead", {}, el("tr", {}, ["#", "sample", ...sides.map((s) => s.display_name)].map((h) => el("th", {}, h)))),
      el("tbody", {}, data.rows.map((r) => el("tr", {}, el("td", { class: "num" }, r.position),
        el("td", {}, el("a", { href: `#/sample/${sides[0].uuid}/${r.position}` }, r.sample_id), r.epoch > 1 ? ` (epoch ${r.epoch})` : ""),
        r.cells.map(cell))))),
    pager({ page: data.page, pages: data.pages, total: data.total }, (p) => {
      location.hash = "#/compare" + query({ uuid: uuids, which, page: p }); }));
}

// -- trends ------------------------------------------------------------------------------------

function legend(node, colour) {
  node.style.fill = colour;  // CSSOM, which the page's Content-Security-Policy allows
  return node;
}

function lineChart(series, label) {
  const W = 720, H = 280, pad = 44;
  const all = series.flatMap((s) => s.points).filter((p) => p.value !== null && p.value !== undefined);
  const count = Math.max(...series.map((s) => s.points.length), 1);
  const lo = Math.min(0, ...all.map((p) => p.value)), hi = Math.max(1, ...all.map((p) => p.value));
  const x = (i) => pad + (count === 1 ? (W - 2 * pad) / 2 : ((W - 2 * pad) * i) / (count - 1));
  const y = (v) => H - pad - ((H - 2 * pad) * (v - lo)) / (hi - lo || 1);
  const colours = ["#1d4ed8", "#b91c1c", "#15803d", "#b45309", "#7c3aed", "#0e7490"];
  return svg("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    svg("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: "#9ca3af" }),
    svg("line", { x1: pad, y1: pad, x2: pad, y2: H - pad, stroke: "#9ca3af" }),
    svg("text", { x: 4, y: y(hi) + 4 }, fmt.num(hi, 2)), svg("text", { x: 4, y: y(lo) + 4 }, fmt.num(lo, 2)),
    series.map((s, n) => {
      const points = s.points.map((p, i) => ({ ...p, i })).filter((p) => p.value !== null && p.value !== undefined);
      return [svg("polyline", { class: "series", fill: "none", stroke: colours[n % colours.length], "stroke-width": 2,
          points: points.map((p) => `${x(p.i)},${y(p.value)}`).join(" ") }),
        points.map((p) => svg("circle", { class: "point", cx: x(p.i), cy: y(p.value), r: 3.5, fill: colours[n % colours.length] },
          svg("title", {}, `${s.name} ${p.date}: ${fmt.num(p.value)}`))),
        legend(svg("text", { x: W - pad - 150, y: pad + 14 * n }, "● " + s.name), colours[n % colours.length])];
    }),
    (series[0] ? series[0].points : []).map((p, i) => svg("text", { x: x(i) - 24, y: H - pad + 16 }, p.date)));
}

async function trendsPage([evaluationKey]) {
  const picker = el("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    location.hash = "#/trends/" + encodeURIComponent(new FormData(event.target).get("key"));
  } }, el("label", {}, "evaluation key", el("input", { name: "key", value: evaluationKey || "", required: true })),
    el("button", { type: "submit" }, "Show"));
  if (!evaluationKey) return show(el("h1", {}, "Trends"), picker);
  const { summary, runs } = await api(`${API}/trends${query({ evaluation_key: evaluationKey, days: 3650 })}`);
  const label = (run) => new Date(run.time).toLocaleDateString() + " " + run.run_id.slice(0, 6);
  const specs = [...new Set(runs.flatMap((run) => Object.keys(run.scores)))];
  const metricNames = [...new Set(runs.flatMap((run) => Object.values(run.metrics).flatMap((m) => Object.keys(m))))]
    .filter((name) => !name.endsWith("/stderr"));
  const stars = summary.metrics_summary.critical_metrics;
  show(el("h1", {}, `Trends: ${evaluationKey}`), picker,
    el("div", { class: "cards" }, card("runs", runs.length), card("latest score", fmt.pct(summary.overall_score)),
      card("trend", summary.trending.trend), card("change", fmt.num(summary.trending.score_change))),
    el("h2", {}, "Score per run (pass rate of each task specification)"),
    lineChart(specs.map((key) => ({ name: key, points: runs.map((run) => ({ date: label(run), value: run.scores[key] })) })),
      "score over runs"),
    stars.length ? el("p", {}, "Star metric: " + stars.join(", ")) : null,
    el("h2", {}, "Metrics per run"),
    metricNames.map((name) => el("section", {}, el("h3", {}, name + (stars.includes(name) ? " (star metric)" : "")),
      lineChart(specs.map((key) => ({ name: key, points: runs.map((run) => ({ date: label(run),
        value: (run.metrics[key] || {})[name] })) })), name))));
}

// -- start -------------------------------------------------------------------------------------

async function start() {
  const session = await fetch("/ui/session", { credentials: "same-origin" }).then((r) => r.json());
  const box = document.getElementById("session");
  if (session.signed_in && !session.no_auth) {
    box.textContent = `signed in${session.name ? " as " + session.name : ""} (${session.scope})`;
    document.getElementById("logout").hidden = false;
  }
  if (!session.signed_in && !location.hash.startsWith("#/login")) location.hash = "#/login";
  window.addEventListener("hashchange", route);
  route();
}

start();
