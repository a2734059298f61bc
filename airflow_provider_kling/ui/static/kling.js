// The Kling pages of Airflow's UI: the take of a task instance, and the Kling page (takes, spend,
// generations in flight). Plain DOM, no framework, nothing fetched from elsewhere: every string that
// came from a user or a server is set as text, never as markup.
"use strict";

const PREFIX = location.pathname.slice(0, location.pathname.indexOf("/kling/ui/"));
const API = PREFIX + "/kling/api";
const STATES_IN_FLIGHT = ["scheduled", "queued", "running", "deferred", "up_for_reschedule", "up_for_retry", "restarting"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(path) {
  const answer = await fetch(API + path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!answer.ok) {
    let detail = answer.statusText;
    try { detail = (await answer.json()).detail || detail; } catch (err) { /* not JSON */ }
    throw new Error(`HTTP ${answer.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return answer.json();
}

const local = (path) => (path ? PREFIX + path : undefined);
const seconds = (s) => (s === undefined || s === null ? "–" : s >= 90 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s * 10) / 10} s`);
const when = (epoch) => (epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–");
const inFlight = (state) => STATES_IN_FLIGHT.includes(state);
const stateLabel = (take) => (take.state === "success" ? "succeeded" : take.state || "no state");

function badge(take) {
  return el("span", { class: `state state-${take.state || "none"}`, "data-state": take.state }, stateLabel(take));
}

function factsLine(stored) {
  if (!stored || !stored.video_codec) return null;
  const audio = stored.has_audio ? `with audio (${stored.audio_codec})` : "no audio";
  return `${stored.duration_s} s, ${stored.width}x${stored.height} (${stored.aspect_ratio}), ${stored.frame_rate} fps, ${stored.video_codec}, ${audio}`;
}

function row(label, ...value) {
  return [el("dt", {}, label), el("dd", {}, ...value)];
}

// --- the take of one task instance ------------------------------------------------------------

function takeQuery() {
  const query = new URLSearchParams(location.search);
  const mapIndex = Number.parseInt(query.get("map_index"), 10);
  return {
    dag_id: query.get("dag_id"),
    run_id: query.get("run_id"),
    task_id: query.get("task_id"),
    map_index: Number.isInteger(mapIndex) ? mapIndex : -1,
  };
}

async function showTake() {
  const where = document.getElementById("take");
  const key = takeQuery();
  const path = `/takes/${encodeURIComponent(key.dag_id)}/${encodeURIComponent(key.run_id)}/${encodeURIComponent(key.task_id)}/${key.map_index}`;
  let take;
  try {
    take = await getJSON(path);
  } catch (err) {
    where.replaceChildren(el("p", { class: "muted", id: "no-take" }, err.message.includes("404") ? "This task made no Kling take." : `The take could not be read: ${err.message}`));
    return;
  }
  where.replaceChildren(renderTake(take));
  if (inFlight(take.state)) setTimeout(showTake, 5000);
}

function renderTake(take) {
  const parts = [el("header", { class: "take-head" }, el("h1", {}, take.task_id), badge(take))];
  if (take.links.video) {
    parts.push(el("video", {
      id: "take-video", controls: true, preload: "metadata", playsinline: true,
      src: local(take.links.video), poster: local(take.links.poster),
    }));
  } else if (take.stored && take.stored.unreachable) {
    parts.push(el("p", { class: "notice", id: "unreachable" }, take.stored.unreachable));
  }
  if (take.runcomfy_url && !take.links.video) {
    parts.push(el("p", {}, el("a", { href: take.runcomfy_url, target: "_blank", rel: "noopener noreferrer", id: "runcomfy-link" }, "Watch RunComfy's copy"), " (while RunComfy keeps it)"));
  }
  if (inFlight(take.state)) {
    parts.push(el("p", { class: "notice", id: "in-flight" }, `${stateLabel(take)} for ${seconds(take.elapsed_s)}`, take.request_id ? ` (request ${take.request_id})` : ""));
  }
  if (take.error) {
    parts.push(el("div", { class: "error", id: "take-error", role: "alert" }, el("strong", {}, take.error.type), ": ", take.error.message));
  }
  const stored = take.stored || {};
  const timings = take.timings || {};
  const facts = el("dl", { class: "facts", id: "facts" },
    take.prompt !== undefined ? row("Prompt", el("span", { class: "prompt" }, take.prompt)) : null,
    take.negative_prompt ? row("Negative prompt", take.negative_prompt) : null,
    take.model ? row("Model", take.model) : null,
    take.duration !== undefined ? row("Asked", `${take.duration} s${take.aspect_ratio ? `, ${take.aspect_ratio}` : ""}`) : null,
    take.images ? row("Images", Object.entries(take.images).map(([k, v]) => `${k}: ${v}`).join(", ")) : null,
    row("Request", take.request_id || "–"),
    row("Cost", take.cost === undefined || take.cost === null ? "not reported" : String(take.cost)),
    row("Queued", seconds(timings.queued_seconds)),
    row("Rendering", seconds(timings.rendering_seconds)),
    stored.uri ? row("Stored", stored.uri) : null,
    factsLine(stored) ? row("Video", factsLine(stored)) : null,
    stored.size_bytes ? row("Size", `${(stored.size_bytes / 1e6).toFixed(1)} MB, sha256 ${stored.sha256 || "–"}`) : null,
    row("Task", `${take.dag_id} / ${take.run_id} / try ${take.try_number}`),
    row("Started", when(take.started_at)),
  );
  parts.push(facts);
  for (const mismatch of stored.mismatch || []) {
    parts.push(el("p", { class: "flag mismatch" }, "Not as asked: ", mismatch));
  }
  return el("article", { class: "take" }, parts);
}

// --- the Kling page ---------------------------------------------------------------------------

const grid = { offset: 0, next: 0, loading: false, generation: 0 };

function filterQuery() {
  const form = document.getElementById("filters");
  const query = new URLSearchParams();
  const data = new FormData(form);
  for (const name of ["dag_id", "state"]) if (data.get(name)) query.set(name, data.get(name));
  if (data.get("since")) query.set("since", String(Date.parse(data.get("since") + "T00:00:00Z") / 1000));
  if (data.get("until")) query.set("until", String(Date.parse(data.get("until") + "T00:00:00Z") / 1000 + 86400));
  return query;
}

function card(take) {
  const picture = take.links.poster
    ? el("img", { src: local(take.links.poster), alt: "", loading: "lazy", decoding: "async", width: 320, height: 180 })
    : el("div", { class: "no-poster" }, inFlight(take.state) ? "in flight" : take.error ? take.error.type : "no stored video");
  return el("a", { class: "card", href: local(take.links.ui), target: "_top", "data-request": take.request_id },
    picture,
    el("span", { class: "caption" }, take.prompt || take.request_id || take.task_id),
    el("span", { class: "meta" }, badge(take), ` ${take.dag_id} · ${take.task_id} · ${when(take.submitted_at || take.started_at)}`),
  );
}

async function loadPage() {
  if (grid.loading || grid.next === null) return;
  grid.loading = true;
  const generation = grid.generation;
  const query = filterQuery();
  query.set("offset", String(grid.next));
  const more = document.getElementById("more");
  try {
    const page = await getJSON(`/takes?${query}`);
    if (generation !== grid.generation) return;
    document.getElementById("grid").append(...page.takes.map(card));
    grid.next = page.next_offset;
    const shown = document.querySelectorAll("#grid .card").length;
    more.textContent = shown === 0 ? "No takes." : grid.next === null ? `${shown} takes.` : "";
  } catch (err) {
    more.textContent = `The takes could not be read: ${err.message}`;
  } finally {
    grid.loading = false;
  }
}

function resetGrid() {
  grid.generation += 1;
  grid.next = 0;
  grid.loading = false;
  document.getElementById("grid").replaceChildren();
  loadPage();
}

const PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function spendChart(spend) {
  const days = [];
  const start = Date.parse(spend.since + "T00:00:00Z");
  for (let i = 0; i < spend.days; i += 1) days.push(new Date(start + i * 86400000).toISOString().slice(0, 10));
  const dags = [...new Set(spend.rows.map((r) => r.dag_id))].sort();
  const perDay = new Map(days.map((d) => [d, 0]));
  for (const r of spend.rows) perDay.set(r.day, (perDay.get(r.day) || 0) + r.video_seconds);
  const top = Math.max(1, ...perDay.values());
  const width = 720, height = 180, barWidth = width / days.length;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, role: "img", "aria-label": "Seconds of video per day, per DAG", id: "spend-chart" });
  const stacked = new Map(days.map((d) => [d, 0]));
  for (const r of spend.rows) {
    const i = days.indexOf(r.day);
    if (i < 0) continue;
    const h = (r.video_seconds / top) * height;
    const below = stacked.get(r.day);
    stacked.set(r.day, below + h);
    const bar = svg("rect", { x: i * barWidth + 1, y: height - below - h, width: barWidth - 2, height: Math.max(h, 0.5), fill: PALETTE[dags.indexOf(r.dag_id) % PALETTE.length] },
      svg("title", {}, `${r.day} · ${r.dag_id}: ${r.videos} videos, ${r.video_seconds} s${r.cost !== undefined ? `, cost ${r.cost}` : ""}`));
    chart.append(bar);
  }
  chart.append(svg("text", { x: 0, y: height + 16, class: "axis" }, days[0]), svg("text", { x: width, y: height + 16, "text-anchor": "end", class: "axis" }, days[days.length - 1]));
  const totals = new Map();
  for (const r of spend.rows) {
    const t = totals.get(r.dag_id) || { videos: 0, video_seconds: 0, cost: undefined };
    t.videos += r.videos;
    t.video_seconds += r.video_seconds;
    if (r.cost !== undefined) t.cost = (t.cost || 0) + r.cost;
    totals.set(r.dag_id, t);
  }
  const all = { videos: 0, video_seconds: 0, cost: undefined };
  for (const t of totals.values()) {
    all.videos += t.videos;
    all.video_seconds += t.video_seconds;
    if (t.cost !== undefined) all.cost = (all.cost || 0) + t.cost;
  }
  const fmt = (n) => (n === undefined ? "–" : String(Math.round(n * 1000) / 1000));
  const table = el("table", { id: "spend-totals" },
    el("thead", {}, el("tr", {}, el("th", {}, "DAG"), el("th", {}, "Videos"), el("th", {}, "Seconds"), el("th", {}, "Cost"))),
    el("tbody", {}, [...totals.entries()].map(([dag, t]) => el("tr", {},
      el("td", {}, el("span", { class: "swatch", style: null, "data-color": dags.indexOf(dag) % PALETTE.length }), dag),
      el("td", {}, t.videos), el("td", {}, fmt(t.video_seconds)), el("td", {}, fmt(t.cost))))),
    el("tfoot", {}, el("tr", { id: "spend-total" }, el("th", {}, "All"), el("td", { "data-videos": all.videos }, all.videos),
      el("td", { "data-seconds": all.video_seconds }, fmt(all.video_seconds)), el("td", { "data-cost": all.cost === undefined ? "" : all.cost }, fmt(all.cost)))),
  );
  return [spend.rows.length ? chart : el("p", { class: "muted" }, "No video in the last 30 days."), table];
}

function budgetsTable(budgets) {
  if (!budgets.shown) return el("p", { class: "muted", id: "budgets-hidden" }, budgets.why);
  const names = Object.keys(budgets.budgets);
  if (!names.length) return el("p", { class: "muted" }, `The connection ${budgets.conn_id} sets no budget.`);
  const cell = (spent, cap) => `${Math.round(spent * 1000) / 1000}${cap === null || cap === undefined ? "" : ` of ${cap}`}`;
  return el("table", { id: "budgets-table" },
    el("caption", {}, `Budgets of ${budgets.conn_id}, from the ledger`),
    el("thead", {}, el("tr", {}, ["Budget", "Period", "Videos", "Seconds", "Cost"].map((h) => el("th", {}, h)))),
    el("tbody", {}, names.map((name) => {
      const b = budgets.budgets[name];
      return el("tr", { "data-budget": name }, el("td", {}, name), el("td", {}, b.period),
        el("td", { "data-spent": b.spent.videos }, cell(b.spent.videos, b.cap.videos)),
        el("td", { "data-spent": b.spent.video_seconds }, cell(b.spent.video_seconds, b.cap.video_seconds)),
        el("td", { "data-spent": b.spent.cost }, cell(b.spent.cost, b.cap.cost)));
    })),
  );
}

function inFlightTable(takes) {
  if (!takes.length) return el("p", { class: "muted" }, "No generation in flight.");
  return el("table", { id: "in-flight-table" },
    el("thead", {}, el("tr", {}, ["Take", "State", "For", "Request"].map((h) => el("th", {}, h)))),
    el("tbody", {}, takes.map((t) => el("tr", {},
      el("td", {}, el("a", { href: local(t.links.ui), target: "_top" }, `${t.dag_id} · ${t.task_id}`), el("div", { class: "muted prompt" }, t.prompt || "")),
      el("td", {}, badge(t)), el("td", {}, seconds(t.elapsed_s)), el("td", {}, t.request_id || "–")))),
  );
}

async function showPage() {
  const form = document.getElementById("filters");
  form.addEventListener("change", resetGrid);
  form.addEventListener("submit", (event) => event.preventDefault());
  getJSON("/dags").then((answer) => {
    const select = form.elements.dag_id;
    for (const dag of answer.dag_ids) select.append(el("option", { value: dag }, dag));
  }).catch(() => {});
  new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadPage(); }, { rootMargin: "400px" })
    .observe(document.getElementById("more"));
  resetGrid();
  const refreshFlight = () => getJSON("/in-flight")
    .then((answer) => document.getElementById("in-flight").replaceChildren(inFlightTable(answer.takes)))
    .catch((err) => document.getElementById("in-flight").replaceChildren(el("p", { class: "error" }, err.message)))
    .finally(() => setTimeout(refreshFlight, 10000));
  refreshFlight();
  try {
    const spend = await getJSON("/spend");
    document.getElementById("spend").replaceChildren(...spendChart(spend));
    document.getElementById("budgets").replaceChildren(budgetsTable(spend.budgets));
  } catch (err) {
    document.getElementById("spend").replaceChildren(el("p", { class: "error" }, err.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "take") showTake();
  else showPage();
});
