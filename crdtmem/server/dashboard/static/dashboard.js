// crdtmem live dashboard. A plain client of the public API (no build step, no dependencies):
//   memories   GET /v1/memories once, then the SSE feed GET /v1/events, resumed by event id;
//              a "forgotten" event takes the memory off the page
//   replicas   GET /v1/status every STATUS_EVERY_MS
//   conflicts  GET /v1/conflicts, reloaded when an event touches a conflict; resolved by POST
//   search     POST /v1/search
// Data is always put into the page as text (textContent), never as HTML.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const MAX_ROWS = 200;
const STATUS_EVERY_MS = 1500;
const RETRY_MS = 3000;
const EVENT_TYPES = ["create", "update", "delete", "conflict", "resolve"];

const $ = (id) => document.getElementById(id);

// -- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0: the replica could not be reached
    this.code = code;
  }
}

function authHeaders() {
  return TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
}

// Paths are relative ("v1/status"), so the page also works behind a proxy under a path prefix.
async function api(method, path, body) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "Unreachable", String(err.message || err));
  }
  return readJson(response);
}

async function readJson(response) {
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error || response.statusText, data?.message || text);
  }
  return data;
}

function describe(err) {
  if (err.status === 401) {
    return TOKEN
      ? "401 Unauthorized: this replica did not accept the token in the page address (?token=…)."
      : "401 Unauthorized: this replica needs a token. Open the dashboard as /dashboard?token=YOUR_TOKEN.";
  }
  if (err.status === 403) return `403 Forbidden: ${err.message || "the token may not do this."}`;
  if (err.status === 0) return `Cannot reach the replica (${err.message}); retrying.`;
  return `${err.status} ${err.code}: ${err.message}`;
}

// -- the error banner: one message per source, cleared when that source next succeeds ----------

const problems = new Map();

function problem(source, message) {
  if (message) problems.set(source, message);
  else problems.delete(source);
  const list = $("banner-messages");
  list.replaceChildren(...[...new Set(problems.values())].map((text) => el("li", {}, text)));
  $("banner").hidden = problems.size === 0;
}

async function tracked(source, method, path, body) {
  try {
    const data = await api(method, path, body);
    problem(source, null);
    return data;
  } catch (err) {
    problem(source, describe(err));
    throw err;
  }
}

// -- DOM helpers -------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}` }, text);
}

function show(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

// An HLC is "wall_ms.logical"; show the wall part as local time.
function hlcTime(hlc) {
  const millis = Number(String(hlc || "").split(".")[0]);
  return Number.isFinite(millis) && millis > 0 ? new Date(millis) : null;
}

function timeLabel(date) {
  if (!date) return "";
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
}

function shortId(id) {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}

// -- memories ----------------------------------------------------------------------------------

const shown = new Map(); // memory id -> {version, row}

function memoryContent(memory) {
  const { kind, content } = memory;
  if (kind === "list" && Array.isArray(content)) {
    return el("ul", { class: "items" }, ...content.map((item) => el("li", {}, show(item))));
  }
  if (kind === "conversation" && Array.isArray(content)) {
    return el(
      "ol",
      { class: "messages" },
      ...content.map((m) => el("li", {}, el("b", {}, `${m?.role ?? "?"}: `), show(m?.text ?? m))),
    );
  }
  return el("div", { class: "text" }, show(content));
}

function scopeText(scope) {
  const parts = [];
  if (scope.user_id) parts.push(`user ${scope.user_id}`);
  if (scope.tenant_id) parts.push(`tenant ${scope.tenant_id}`);
  if (scope.topics?.length) parts.push(`topics ${scope.topics.join(", ")}`);
  if (scope.shared) parts.push("shared");
  return parts.length ? parts.join(" · ") : "global";
}

function memoryRow(memory, score) {
  const updated = hlcTime(memory.updated_at);
  return el(
    "li",
    {
      class: `memory${memory.deleted ? " deleted" : ""}${memory.conflicted ? " conflicted" : ""}`,
      dataset: { id: memory.id, version: String(memory.version) },
    },
    el(
      "div",
      { class: "meta" },
      badge(memory.kind, "kind"),
      memory.deleted && badge("deleted"),
      memory.conflicted && badge("conflicted"),
      score !== undefined && badge(`score ${score.toFixed(3)}`, "score"),
      el("code", { class: "id", title: memory.id }, shortId(memory.id)),
      el("time", { datetime: updated?.toISOString(), title: memory.updated_at }, timeLabel(updated)),
    ),
    memoryContent(memory),
    el(
      "div",
      { class: "foot" },
      ...(memory.tags || []).map((tag) => el("span", { class: "tag" }, `#${show(tag)}`)),
      el("span", { class: "scope" }, scopeText(memory.scope || {})),
    ),
  );
}

function updateMemoryCount() {
  $("memory-count").textContent = shown.size ? String(shown.size) : "";
  $("memories-empty").hidden = shown.size > 0;
}

// A changed memory carries this replica's newest version, so it goes to the top: the list stays
// ordered most recently changed first, like GET /v1/memories.
function upsertMemory(memory, highlight) {
  const known = shown.get(memory.id);
  if (known && known.version >= memory.version) return; // a replayed or repeated event
  const row = memoryRow(memory);
  known?.row.remove();
  shown.set(memory.id, { version: memory.version, row, content: memory.content });
  const list = $("memories");
  if (highlight) {
    list.prepend(row);
    row.classList.add("changed");
    row.addEventListener("animationend", () => row.classList.remove("changed"), { once: true });
  } else {
    list.append(row);
  }
  while (list.children.length > MAX_ROWS) {
    const last = list.lastElementChild;
    shown.delete(last.dataset.id);
    last.remove();
  }
  updateMemoryCount();
}

function removeMemory(id) {
  shown.get(id)?.row.remove();
  shown.delete(id);
  for (const row of document.querySelectorAll("#search-results li.memory")) {
    if (row.dataset.id === id) row.remove();
  }
  updateMemoryCount();
  if (conflictIds.has(id)) scheduleConflicts();
}

async function loadMemories() {
  const data = await tracked("memories", "GET", `v1/memories?include_deleted=true&limit=${MAX_ROWS}`);
  $("memories").replaceChildren();
  shown.clear();
  for (const memory of data.memories) upsertMemory(memory, false);
  updateMemoryCount();
  return data.memories.reduce((newest, m) => Math.max(newest, m.version), 0);
}

// -- the event feed ----------------------------------------------------------------------------

let feed = null;
let lastEventId = null; // "{replica_id}:{version}": where a new EventSource resumes

function feedUrl() {
  const query = new URLSearchParams();
  if (TOKEN) query.set("token", TOKEN);
  if (lastEventId) query.set("last_event_id", lastEventId);
  const text = query.toString();
  return text ? `v1/events?${text}` : "v1/events";
}

function feedState(state, text) {
  const badgeEl = $("feed-state");
  badgeEl.dataset.state = state;
  badgeEl.textContent = text;
}

function openFeed() {
  feed?.close();
  const source = new EventSource(feedUrl());
  feed = source;
  source.onopen = () => {
    feedState("live", "live");
    problem("feed", null);
    scheduleConflicts(0); // anything missed while disconnected
  };
  const onEvent = (message) => {
    lastEventId = message.lastEventId || lastEventId;
    const event = JSON.parse(message.data);
    const memory = event.memory;
    if (event.content_from != null) {
      // messages added at the end of a conversation: the event carries only those
      const held = shown.get(memory.id)?.content;
      if (!Array.isArray(held) || held.length !== event.content_from) {
        // not the conversation this event follows on from (not shown, or older): read it whole
        tracked("memories", "GET", `v1/memories/${encodeURIComponent(memory.id)}`)
          .then((whole) => upsertMemory(whole, true))
          .catch(() => {});
        return;
      }
      memory.content = held.concat(memory.content);
    }
    const conflictRelated =
      event.event_type === "conflict" || event.event_type === "resolve" || memory.conflicted;
    upsertMemory(memory, true);
    if (conflictRelated || conflictIds.has(memory.id)) scheduleConflicts();
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, onEvent);
  // "forgotten": the memory was erased (here or on a replica that synced it); the event carries its
  // id and channels only, so its rows go, wherever they are shown.
  source.addEventListener("forgotten", (message) => {
    lastEventId = message.lastEventId || lastEventId;
    removeMemory(JSON.parse(message.data).memory_id);
  });
  // "reset": the node could not place our Last-Event-ID (another replica, or one rebuilt): what we
  // show may be stale, and the current state of every memory follows as create events.
  source.addEventListener("reset", () => {
    $("memories").replaceChildren();
    shown.clear();
    updateMemoryCount();
  });
  // On "overflow" the server ends the stream; EventSource reconnects by itself with Last-Event-ID.
  source.addEventListener("overflow", () => feedState("connecting", "catching up"));
  source.onerror = () => {
    if (source !== feed) return;
    if (source.readyState === EventSource.CONNECTING) {
      feedState("connecting", "reconnecting");
      return;
    }
    // CLOSED: the server refused the stream (an HTTP error); find out why, then try again later.
    feedState("down", "disconnected");
    source.close();
    diagnoseFeed();
    setTimeout(() => source === feed && openFeed(), RETRY_MS);
  };
}

// EventSource hides the status of a refused stream; ask for the same URL to show a useful error.
async function diagnoseFeed() {
  const abort = new AbortController();
  try {
    const response = await fetch(feedUrl(), { headers: authHeaders(), signal: abort.signal });
    if (!response.ok) await readJson(response);
  } catch (err) {
    if (err instanceof ApiError) problem("feed", `Event feed: ${describe(err)}`);
    else problem("feed", "Event feed: cannot reach the replica; retrying.");
  } finally {
    abort.abort();
  }
}

// -- replicas (status) -------------------------------------------------------------------------

function modeBadge(mode) {
  return mode ? badge(mode, `mode ${mode}`) : el("span", { class: "muted" }, "–");
}

function peerRows(status) {
  const rows = [];
  for (const peer of status.peers || []) {
    const state = peer.connected
      ? badge("connected", "ok")
      : el("span", { class: "bad", title: peer.last_error || "" },
          `down${peer.attempts ? ` (try ${peer.attempts})` : ""}${peer.last_error ? `: ${peer.last_error}` : ""}`);
    rows.push(el("tr", { dataset: { peer: peer.peer_id || peer.url, direction: "outbound" } },
      el("td", { title: peer.url }, peer.peer_id || peer.url),
      el("td", {}, "→ out"),
      el("td", {}, modeBadge(peer.mode)),
      el("td", { class: "num" }, peer.lag ?? "–"),
      el("td", {}, state)));
  }
  for (const link of status.links || []) {
    rows.push(el("tr", { dataset: { peer: link.peer_id, direction: "inbound" } },
      el("td", {}, link.peer_id),
      el("td", {}, "← in"),
      el("td", {}, modeBadge(link.mode)),
      el("td", { class: "num" }, link.lag ?? "–"),
      el("td", {}, link.errors ? el("span", { class: "bad" }, `${link.errors} errors`) : badge("connected", "ok"))));
  }
  return rows;
}

function renderStatus(status) {
  $("replica").textContent = status.replica_id;
  document.title = `crdtmem · ${status.replica_id}`;
  const facts = [
    ["replica", status.replica_id],
    ["memories", status.memories],
    ["pending deltas", status.pending_deltas],
    ["feed subscribers", status.event_subscribers],
    ["channels", status.subscribed ? status.subscribed.join(", ") : "all"],
  ];
  if (status.index) facts.push(["index lag", `${status.index.lag_versions} versions`]);
  else if ("index" in status) facts.push(["search index", "none"]);
  // a token that does not read every channel sees only its own channels, not the node's counts
  $("status-summary").replaceChildren(...facts.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));

  const rows = peerRows(status);
  $("peers").replaceChildren(...rows);
  $("peers-table").hidden = rows.length === 0;
  $("peers-empty").hidden = rows.length > 0;

  const vectors = Object.entries(status.version_vectors || {});
  $("vectors").replaceChildren(
    ...vectors.map(([channel, vector]) =>
      el("div", { class: "vector" },
        el("code", { class: "channel" }, channel),
        ...Object.entries(vector).sort().map(([origin, seq]) => el("span", { class: "seq", title: `highest contiguous seq from ${origin}` }, `${origin}: ${seq}`)))),
  );
  if (!vectors.length) $("vectors").append(el("p", { class: "muted" }, "No channels yet."));
  $("status-age").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function pollStatus() {
  if (!document.hidden) {
    try {
      renderStatus(await tracked("status", "GET", "v1/status"));
    } catch {
      $("status-age").textContent = "not updating";
    }
  }
  setTimeout(pollStatus, STATUS_EVERY_MS);
}

// -- conflicts ---------------------------------------------------------------------------------

let conflictIds = new Set();
let conflictTimer = null;
let conflictLoads = 0;

function scheduleConflicts(delay = 150) {
  clearTimeout(conflictTimer);
  conflictTimer = setTimeout(loadConflicts, delay);
}

async function loadConflicts() {
  const ticket = ++conflictLoads;
  let data;
  try {
    data = await tracked("conflicts", "GET", "v1/conflicts");
  } catch {
    return;
  }
  if (ticket === conflictLoads) renderConflicts(data.conflicts);
}

function renderConflicts(conflicts) {
  conflictIds = new Set(conflicts.map((c) => c.memory_id));
  $("conflicts").replaceChildren(...conflicts.map(conflictItem));
  $("conflict-count").textContent = conflicts.length ? String(conflicts.length) : "";
  $("conflicts-empty").hidden = conflicts.length > 0;
}

function conflictItem(conflict) {
  const item = el("li", { class: "conflict", dataset: { memoryId: conflict.memory_id, field: conflict.field } });
  const values = conflict.values.map((candidate, index) => {
    const button = el("button", { type: "button", class: "resolve" }, "Keep this");
    button.addEventListener("click", () => resolve(item, conflict, candidate.value));
    return el("li", { class: "candidate" },
      el("span", { class: "value" }, show(candidate.value)),
      el("span", { class: "by", title: candidate.hlc },
        `${candidate.replica} · ${timeLabel(hlcTime(candidate.hlc))}${index === 0 ? " · read now" : ""}`),
      button);
  });
  item.append(
    el("div", { class: "meta" },
      el("code", { class: "id", title: conflict.memory_id }, shortId(conflict.memory_id)),
      el("span", {}, "field "),
      el("code", {}, conflict.field)),
    el("ul", { class: "candidates" }, ...values),
  );
  return item;
}

async function resolve(item, conflict, value) {
  const buttons = item.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const path = `v1/memories/${encodeURIComponent(conflict.memory_id)}/resolve`;
    await tracked("resolve", "POST", path, { field: conflict.field, value });
    item.classList.add("resolving");
    scheduleConflicts(0);
  } catch {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// -- search ------------------------------------------------------------------------------------

function searchMessage(text, isError) {
  const message = $("search-message");
  message.textContent = text || "";
  message.hidden = !text;
  message.classList.toggle("error", Boolean(isError));
}

async function search(event) {
  event.preventDefault();
  const query = $("search-query").value.trim();
  if (!query) return clearSearch();
  const results = $("search-results");
  $("search-clear").hidden = false;
  searchMessage("Searching…");
  try {
    const data = await api("POST", "v1/search", { query, limit: 20 });
    problem("search", null);
    results.replaceChildren(...data.results.map((r) => memoryRow(r.memory, r.score)));
    results.hidden = data.results.length === 0;
    searchMessage(data.results.length ? `${data.count} result(s) for “${query}”` : `Nothing found for “${query}”.`);
  } catch (err) {
    results.replaceChildren();
    results.hidden = true;
    if (err.status === 400 && /no index/i.test(err.message)) {
      searchMessage("Search is not available: this replica has no search index.", true);
    } else if (err.status === 401 || err.status === 403) {
      problem("search", describe(err));
      searchMessage("Search failed: see the message above.", true);
    } else {
      searchMessage(`Search failed: ${describe(err)}`, true);
    }
  }
}

function clearSearch() {
  $("search-query").value = "";
  $("search-results").replaceChildren();
  $("search-results").hidden = true;
  $("search-clear").hidden = true;
  searchMessage("");
}

// -- start -------------------------------------------------------------------------------------

// The feed resumes right after the listed state ("{replica}:{newest version}"), so no change can
// fall between the list and the first live event.
async function connect() {
  try {
    const status = await tracked("status", "GET", "v1/status");
    renderStatus(status);
    const newest = await loadMemories();
    lastEventId = `${status.replica_id}:${newest}`;
  } catch (err) {
    feedState("down", err.status === 401 || err.status === 403 ? "not authorized" : "offline");
    setTimeout(connect, RETRY_MS);
    return;
  }
  if (!TOKEN) $("auth-mode").textContent = "no token (open mode)";
  openFeed();
  setTimeout(pollStatus, STATUS_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("auth-mode").textContent = TOKEN ? "token from the page address" : "no token";
  $("search").addEventListener("submit", search);
  $("search-clear").addEventListener("click", clearSearch);
  $("banner-close").addEventListener("click", () => {
    problems.clear();
    problem("", null);
  });
  for (const list of [$("memories"), $("search-results")]) {
    list.addEventListener("click", (event) => {
      if (event.target.closest(".text")) event.target.closest(".memory").classList.toggle("expanded");
    });
  }
  connect();
});
