// Sharp Eyes control room: node tree, cameras, live events and a camera page, over the gateway's /api/v1.
// Plain ES module, no build step, nothing loaded from outside this gateway.

import { applyStatic, lang, setLang, t, tOr } from "./i18n.js";
import { clearDetections, showDetection, startVideo, stopVideo } from "./live.js";
import { initRecordings, relabelRecordings, showRecordings } from "./recordings.js";
import { initRules, layout, relabel, showRules } from "./rules.js";

const $ = (sel) => document.querySelector(sel);
const FEED_MAX = 200; // events kept in the feed
const CAM_LIST_MAX = 500; // cameras listed for the selected node
const THUMB_EVERY_MS = 4000;
const REFRESH_EVERY_MS = 5000;
const THUMB_WIDTH = 320;
const COMMON_LABELS = ["person", "car", "bus", "truck", "bicycle", "motorcycle"];
const COUNT_BUCKET_S = 300; // the camera page's counts: the last hour in 5-minute buckets
const LIVE_RESTART_MS = 1000; // a live.mp4 stream that ended (the camera reconnected) is opened again after this
const LIVE_FIGURE_MS = 1000; // the live view's mode and latency line is refreshed this often

const S = {
  token: sessionStorage.getItem("se.token"),
  me: null, // GET /api/v1: {node, you: {name, role, node}}
  analysis: null, // GET /healthz -> analysis: this gateway's load (tokens over the tier's node only)
  tree: null,
  selected: null,
  listed: [],
  total: 0,
  capped: false,
  names: new Map(), // camera id -> name, for the feed
  asked: new Set(), // camera ids whose name was looked up
  cards: new Map(), // camera id -> card element
  thumbs: new Map(), // camera id -> object URL of its thumbnail
  visible: new Set(), // camera ids whose card is on screen
  noSnapshots: false,
  feed: [],
  seen: new Set(),
  lastId: null,
  historyLoaded: false,
  labels: new Set(COMMON_LABELS),
  ws: null,
  wsDelay: 1000,
  wsTimer: null,
  feedDenied: false,
  camId: null,
  camera: null,
  camEvents: [],
  camHealth: [],
  camErrors: [null, null], // why the camera page's event and health lists could not be loaded
  liveRetry: null,
  liveMode: "", // "mp4" (the camera's own stream) | "mjpeg" (the fallback)
  liveFallback: "", // why the fallback: "codec" | "error"
  liveCodecs: "", // the RFC 6381 codec string live.mp4 named
  liveFigure: null,
  camCounts: null, // GET /cameras/{id}/counts of the open camera
  nodeCounts: null, // GET /nodes/{code}/counts of the selected node
  timers: [],
  observer: null,
};

class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.status = status;
    this.detail = detail || {};
  }
}

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${S.token}`, ...extra };
}

async function api(path, { method = "GET", body } = {}) {
  const headers = authHeaders(body === undefined ? {} : { "Content-Type": "application/json" });
  const r = await fetch(path, { method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  if ((r.headers.get("Content-Type") || "").includes("json")) data = await r.json().catch(() => null);
  if (r.status === 401 && S.me) signOut(t("login.expired"));
  if (!r.ok) throw new ApiError(r.status, data?.error?.message || r.statusText, data?.error);
  return data;
}

function errorText(e) {
  if (e instanceof ApiError) {
    if (e.status === 403) return t("err.forbidden");
    const fields = (e.detail.fields || []).map((f) => `${f.field}: ${f.message}`).join("; ");
    return t("err.generic", { status: e.status, msg: fields || e.message });
  }
  return String(e?.message || e);
}

/** Create an element: h("li", {class: "x", onclick: f, dataset: {id: 1}}, child, "text"). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const pct = (x) => (x == null ? t("unknown") : `${(x * 100).toFixed(1)}%`);
const locale = () => (lang() === "zh" ? "zh-CN" : "en-GB");
const clockTime = (iso) => (iso ? new Date(iso).toLocaleTimeString(locale(), { hour12: false }) : t("unknown"));

function ago(iso) {
  if (!iso) return t("unknown");
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 120) return t("ago.s", { n: s });
  if (s < 7200) return t("ago.m", { n: Math.round(s / 60) });
  return t("ago.h", { n: Math.round(s / 3600) });
}

function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, dataset: { state } }, t(`state.${state}`));
}

// Rates as people write them: "5", "0.25", "2.9".
const fpsText = (x) => String(Math.round((x ?? 0) * 100) / 100);

/** "2.9 / 5 fps": analysed vs asked (asked is 0 while the camera delivers no frames). */
function rateText(st, key = "cams.rate") {
  const fps = (st.fps_analyzed ?? 0).toFixed(1);
  return st.fps_asked > 0 ? t(`${key}.asked`, { fps, asked: fpsText(st.fps_asked) }) : t(key, { fps });
}

/** The skipped frames by reason, in words: "overload 120, decoding behind 3". */
function skippedText(skipped) {
  return Object.entries(skipped || {}).filter(([, n]) => n > 0).map(([r, n]) => `${tOr("skip", r)} ${n}`).join(", ");
}

/** The "shed" badge's state: shown while the gateway analyses fewer of the camera's frames than asked. */
function setShed(el, st) {
  el.hidden = !st.shed;
  if (!st.shed) return;
  el.textContent = t("shed");
  const skipped = skippedText(st.skipped);
  el.title = [t("shed.title", { fps: (st.fps_analyzed ?? 0).toFixed(1), asked: fpsText(st.fps_asked) }),
    skipped ? t("shed.skipped", { skipped }) : ""].filter(Boolean).join(" ");
}

function nodeLabel(node) {
  return node.name ? `${node.name}` : node.code;
}

// ---- sign-in ---------------------------------------------------------------------------------------

function showLogin(message = "") {
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  $("#token-input").focus();
}

async function signIn(token) {
  const r = await fetch("/api/v1", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  if (r.status === 401) throw new ApiError(401, t("login.bad"));
  if (!r.ok) throw new ApiError(r.status, r.statusText);
  S.token = token;
  S.me = await r.json();
  sessionStorage.setItem("se.token", token);
  S.selected = S.me.you.node;
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#token-input").value = "";
  await start();
}

function signOut(message = "") {
  for (const id of S.timers) clearInterval(id);
  S.timers = [];
  clearTimeout(S.wsTimer);
  if (S.ws) {
    S.ws.onclose = null;
    S.ws.close();
    S.ws = null;
  }
  stopLive();
  S.analysis = null;
  renderOverload();
  for (const url of S.thumbs.values()) URL.revokeObjectURL(url);
  S.thumbs.clear();
  S.cards.clear();
  $("#camera-grid").replaceChildren();
  $("#event-feed").replaceChildren();
  $("#node-counts").hidden = true;
  Object.assign(S, { me: null, token: null, feed: [], lastId: null, historyLoaded: false, camId: null,
    feedDenied: false, noSnapshots: false, camCounts: null, nodeCounts: null });
  S.seen.clear();
  sessionStorage.removeItem("se.token");
  showLogin(message);
}

// ---- start and periodic refresh --------------------------------------------------------------------

// Events, snapshots and live views need the operator role. The page does not ask for what the token's
// role cannot have: each refusal would be an access.denied entry in the audit trail.
const canWatch = () => S.me?.you.role !== "viewer";

async function start() {
  const you = S.me.you;
  S.noSnapshots = !canWatch();
  $("#whoami").textContent = t("top.role", { name: you.name, role: tOr("role", you.role), node: you.node });
  S.observer = S.observer || new IntersectionObserver((entries) => {
    for (const e of entries) {
      const id = e.target.dataset.cameraId;
      if (e.isIntersecting) S.visible.add(id);
      else S.visible.delete(id);
    }
  });
  renderFeedFilters();
  await Promise.allSettled([refreshTree(), refreshCameras(), refreshHealth(), refreshNodeCounts()]);
  loadHistory();
  route();
  S.timers.push(setInterval(tick, REFRESH_EVERY_MS), setInterval(refreshThumbs, THUMB_EVERY_MS),
    setInterval(clock, 1000));
  clock();
  refreshThumbs();
}

let ticks = 0;
async function tick() {
  if (document.hidden || !S.me) return;
  ticks += 1;
  const jobs = [refreshCameras(), refreshHealth()];
  if (ticks % 2 === 0) jobs.push(refreshTree(), refreshNodeCounts());
  if (S.camId) jobs.push(refreshCameraFacts(), refreshCamCounts());
  await Promise.allSettled(jobs);
}

function clock() {
  const now = new Date();
  const el = $("#clock");
  el.textContent = now.toLocaleString(locale(), { hour12: false });
  el.dateTime = now.toISOString();
}

// ---- this gateway's analysis load --------------------------------------------------------------------

// The gateway's own machinery is for tokens over the tier's node (as in /metrics); a token over part of
// the tier sees its cameras' "shed" badges only.
const overTier = () => Boolean(S.me) && S.me.node.startsWith(S.me.you.node);

async function refreshHealth() {
  if (!overTier()) return;
  try {
    const r = await fetch("/healthz", { cache: "no-store" });
    S.analysis = r.ok ? (await r.json()).analysis || null : null;
  } catch {
    S.analysis = null; // the gateway is away: the camera list says so
  }
  renderOverload();
}

function renderOverload() {
  const el = $("#overload");
  const a = S.analysis;
  el.hidden = !a?.overloaded;
  if (el.hidden) return;
  const capacity = a.capacity_fps != null ? fpsText(a.capacity_fps) : t("unknown");
  el.textContent = t("top.overload", { asked: fpsText(a.asked_fps), capacity });
  el.title = t("top.overload.title", { asked: fpsText(a.asked_fps), analyzed: fpsText(a.analyzed_fps), capacity,
    cameras: (a.shed_cameras || []).length, skipped: skippedText(a.skipped) || t("unknown") });
}

// ---- node tree -------------------------------------------------------------------------------------

async function refreshTree() {
  try {
    S.tree = await api("/api/v1/nodes"); // the jurisdiction's root, rolled up, with its children
    $("#tree-error").textContent = "";
  } catch (e) {
    $("#tree-error").textContent = errorText(e);
    return;
  }
  renderTree();
}

function renderTree() {
  const root = S.tree;
  if (!root) return;
  const item = (n, depth) => {
    const c = n.cameras || {};
    const hasKids = (n.children || []).length > 0;
    const li = h("li", { role: "treeitem", "aria-expanded": hasKids ? "true" : null,
      "aria-selected": n.code === S.selected ? "true" : "false", dataset: { node: n.code } });
    const btn = h("button", { type: "button", class: `node${n.code === S.selected ? " selected" : ""}`,
      dataset: { node: n.code }, onclick: () => selectNode(n.code) },
    h("span", { class: "node-name" }, nodeLabel(n)),
    h("span", { class: "node-tier" }, n.tier ? t(`tier.${n.tier}`) : ""),
    h("span", { class: "node-count", dataset: { total: c.total ?? 0 } },
      t("tree.cams", { online: c.online ?? 0, total: c.total ?? 0 })),
    h("span", { class: "node-rates" },
      h("span", { class: "rate", title: t("kpi.online") }, meter(n.online_rate), pct(n.online_rate)),
      h("span", { class: "rate", title: t("kpi.intact") }, meter(n.intact_rate, "intact"), pct(n.intact_rate))));
    li.append(btn);
    if (hasKids) li.append(h("ul", { role: "group" }, n.children.map((k) => item(k, depth + 1))));
    return li;
  };
  $("#node-tree").replaceChildren(item(root, 0));
  const c = root.cameras || {};
  $("#kpi-cameras").textContent = `${c.online ?? 0}/${c.total ?? 0}`;
  $("#kpi-online").textContent = pct(root.online_rate);
  $("#kpi-intact").textContent = pct(root.intact_rate);
  const hour = root.events_last_hour;
  $("#kpi-events").textContent = hour ? (hour.total ?? Object.values(hour.by_type || {}).reduce((a, b) => a + b, 0))
    : t("unknown");
  $("#node-title").textContent = nodeLabel(root);
}

function meter(rate, kind = "online") {
  const bar = h("span", { class: `meter ${kind}`, "aria-hidden": "true" }, h("span"));
  bar.firstChild.style.width = `${Math.round((rate ?? 0) * 100)}%`;
  return bar;
}

function selectNode(code) {
  S.selected = code;
  renderTree();
  if (location.hash.startsWith("#/camera/")) location.hash = "#/";
  refreshCameras();
  refreshNodeCounts();
}

// ---- counts of zones and lines (GET .../counts) ---------------------------------------------------------

const total = (by) => Object.values(by || {}).reduce((a, b) => a + b, 0);

async function refreshNodeCounts() {
  const code = S.selected;
  if (!code) return;
  try {
    const c = await api(`/api/v1/nodes/${code}/counts?bucket=3600`);
    if (S.selected !== code) return;
    S.nodeCounts = c;
  } catch {
    S.nodeCounts = null; // a node outside this tier's tree: nothing to show
  }
  renderNodeCounts();
}

function renderNodeCounts() {
  const el = $("#node-counts");
  const c = S.nodeCounts;
  el.hidden = !c;
  if (!c) return;
  const cross = c.totals.crossings;
  const zones = c.totals.zones;
  el.dataset.node = c.node;
  el.dataset.in = String(total(cross.in));
  el.dataset.out = String(total(cross.out));
  el.dataset.enter = String(total(zones.enter));
  el.textContent = t("counts.node", { in: total(cross.in), out: total(cross.out), enter: total(zones.enter),
    loiter: total(zones.loiter) });
}

async function refreshCamCounts() {
  const id = S.camId;
  if (!id) return;
  try {
    const c = await api(`/api/v1/cameras/${id}/counts?bucket=${COUNT_BUCKET_S}`);
    if (S.camId !== id) return;
    S.camCounts = c;
  } catch (e) {
    S.camCounts = { error: e };
  }
  renderCamCounts();
}

function renderCamCounts() {
  const c = S.camCounts;
  const box = $("#cam-counts-body");
  if (!c) {
    box.replaceChildren();
    return;
  }
  if (c.error) {
    box.replaceChildren(h("p", { class: "error small" }, errorText(c.error)));
    return;
  }
  const lines = Object.entries(c.totals.lines);
  const zones = Object.entries(c.totals.zones);
  if (!lines.length && !zones.length) {
    box.replaceChildren(h("p", { class: "muted small" }, t("counts.none")));
    return;
  }
  const out = [];
  if (lines.length) {
    out.push(h("table", { class: "counts-table lines" },
      h("thead", {}, h("tr", {}, h("th", {}, t("counts.line")), h("th", {}, t("counts.in")), h("th", {}, t("counts.out")))),
      h("tbody", {}, lines.map(([name, d]) => h("tr", { dataset: { line: name } }, h("td", {}, name),
        h("td", { class: "n in" }, String(total(d.in))), h("td", { class: "n out" }, String(total(d.out))))))));
    // Crossings per bucket, both directions: the hour's shape at a glance.
    const per = c.buckets.map((b) => Object.values(b.lines).reduce((a, d) => a + total(d.in) + total(d.out), 0));
    const top = Math.max(1, ...per);
    const bars = h("div", { class: "bars", title: t("counts.bars"), "aria-label": t("counts.bars") },
      per.map((n, i) => {
        const bar = h("span", { class: "bar", title: `${clockTime(c.buckets[i].start)} · ${n}` });
        bar.style.height = `${Math.round((n / top) * 100)}%`;
        return bar;
      }));
    out.push(bars);
  }
  if (zones.length) {
    out.push(h("table", { class: "counts-table zones" },
      h("thead", {}, h("tr", {}, h("th", {}, t("counts.zone")), h("th", {}, t("counts.enter")),
        h("th", {}, t("counts.now")), h("th", {}, t("counts.max")))),
      h("tbody", {}, zones.map(([name, d]) => h("tr", { dataset: { zone: name } }, h("td", {}, name),
        h("td", { class: "n enter" }, String(total(d.enter))),
        h("td", { class: "n now" }, String(c.occupancy[name] ?? 0)), h("td", { class: "n max" }, String(d.max)))))));
  }
  box.replaceChildren(...out);
}

// ---- cameras of the selected node ------------------------------------------------------------------

async function refreshCameras() {
  const q = new URLSearchParams({ node: S.selected, limit: String(CAM_LIST_MAX) });
  try {
    const r = await api(`/api/v1/cameras?${q}`);
    S.listed = r.cameras;
    S.total = r.total ?? r.cameras.length;
    S.capped = Boolean(r.next_cursor);
    for (const c of r.cameras) setName(c.id, c.name);
    $("#camera-error").textContent = "";
  } catch (e) {
    $("#camera-error").textContent = errorText(e);
  }
  renderGrid();
}

function filteredCameras() {
  const state = $("#camera-filter-state").value;
  const q = $("#camera-search").value.trim().toLowerCase();
  return S.listed.filter((c) => (!state || c.status?.state === state)
    && (!q || c.name.toLowerCase().includes(q) || c.id.includes(q)));
}

function renderGrid() {
  $("#cams-title").textContent = t("cams.title", { node: S.selected || "" });
  const shown = filteredCameras();
  const grid = $("#camera-grid");
  const keep = new Set(shown.map((c) => c.id));
  for (const [id, el] of S.cards) {
    if (!keep.has(id)) {
      S.observer.unobserve(el);
      el.remove();
      S.cards.delete(id);
      S.visible.delete(id);
    }
  }
  for (const cam of shown) {
    let card = S.cards.get(cam.id);
    if (!card) {
      card = cameraCard(cam);
      S.cards.set(cam.id, card);
      S.observer.observe(card);
    }
    updateCard(card, cam);
    grid.append(card); // moves existing cards into list order
  }
  let count = t("cams.count", { shown: shown.length, total: S.total });
  if (S.capped) count += ` · ${t("cams.capped", { n: CAM_LIST_MAX })}`;
  $("#camera-count").textContent = count;
  if (!shown.length) grid.replaceChildren(h("p", { class: "muted empty" }, t("cams.empty")));
  else grid.querySelector(".empty")?.remove();
}

function cameraCard(cam) {
  const open = () => { location.hash = `#/camera/${cam.id}`; };
  return h("article", { class: "card", dataset: { cameraId: cam.id } },
    h("button", { type: "button", class: "thumb", onclick: open },
      h("img", { class: "thumb-img", alt: "" }),
      h("span", { class: "thumb-empty" })),
    h("div", { class: "card-body" },
      h("div", { class: "card-title" }, h("span", { class: "badge" }), h("span", { class: "name" }),
        h("span", { class: "badge shed", hidden: true })),
      h("div", { class: "mono small muted cam-id" }, cam.id),
      h("div", { class: "small card-meta" })));
}

function updateCard(card, cam) {
  const st = cam.status || {};
  const state = st.state || "connecting";
  card.dataset.state = state;
  card.querySelector(".thumb").setAttribute("aria-label", t("cams.open", { name: cam.name }));
  const badge = card.querySelector(".badge:not(.shed)");
  badge.className = `badge state-${state}`;
  badge.dataset.state = state;
  badge.textContent = t(`state.${state}`);
  card.querySelector(".name").textContent = cam.name;
  setShed(card.querySelector(".badge.shed"), st);
  card.dataset.shed = st.shed ? "true" : "false";
  const quality = (st.quality || []).map((q) => tOr("quality", q)).join(", ");
  card.querySelector(".card-meta").textContent = [
    st.last_frame_at ? t("cams.lastframe", { ago: ago(st.last_frame_at) }) : t("cams.noframe"),
    rateText(st),
    quality,
  ].filter(Boolean).join(" · ");
  const url = S.thumbs.get(cam.id);
  const img = card.querySelector(".thumb-img");
  if (url && img.src !== url) img.src = url;
  card.querySelector(".thumb-empty").textContent = url ? "" : (state === "online" ? t("cams.noframe") : t(`state.${state}`));
}

async function refreshThumbs() {
  if (document.hidden || !S.me || S.noSnapshots || S.camId) return;
  const ids = [...S.visible].filter((id) => S.cards.get(id)?.dataset.state === "online");
  const one = async (id) => {
    const r = await fetch(`/api/v1/cameras/${id}/snapshot.jpg?width=${THUMB_WIDTH}`,
      { headers: authHeaders(), cache: "no-store" });
    if (r.status === 403) S.noSnapshots = true;
    if (!r.ok) return;
    const url = URL.createObjectURL(await r.blob());
    const old = S.thumbs.get(id);
    S.thumbs.set(id, url);
    const card = S.cards.get(id);
    if (card) {
      card.querySelector(".thumb-img").src = url;
      card.querySelector(".thumb-empty").textContent = "";
    }
    if (old) URL.revokeObjectURL(old);
  };
  // A few at a time: a wall of cameras must not open hundreds of requests at once.
  for (let i = 0; i < ids.length; i += 6) {
    await Promise.allSettled(ids.slice(i, i + 6).map(one));
  }
}

// ---- live event feed -------------------------------------------------------------------------------

function feedForbidden() {
  S.feedDenied = true;
  setWs("denied");
  $("#feed-error").textContent = t("err.forbidden");
}

async function loadHistory() {
  if (!canWatch()) {
    feedForbidden();
    return;
  }
  try {
    const r = await api("/api/v1/events?limit=60");
    for (const ev of r.events.slice().reverse()) addEvent(ev, false);
    S.historyLoaded = true;
    renderFeed();
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) {
      feedForbidden();
      return;
    }
    $("#feed-error").textContent = errorText(e);
  }
  connectWs();
}

function setWs(state) {
  const el = $("#ws-status");
  el.dataset.state = state;
  el.textContent = t(`ws.${state}`);
}

function connectWs() {
  clearTimeout(S.wsTimer);
  if (!S.me || S.feedDenied) return;
  const q = new URLSearchParams({ token: S.token });
  // Resume after the last event seen: the server sends everything after it, once (no gap, no repeat).
  if (S.lastId) q.set("since", S.lastId);
  else if (S.historyLoaded) q.set("since", `${S.me.node}-0-0`);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/v1/events/ws?${q}`);
  S.ws = ws;
  setWs(S.wsDelay > 1000 ? "reconnecting" : "connecting");
  ws.onopen = () => {
    S.wsDelay = 1000;
    setWs("live");
    $("#feed-error").textContent = "";
  };
  ws.onmessage = (msg) => {
    try {
      addEvent(JSON.parse(msg.data), true);
    } catch (err) {
      console.warn("bad event", err);
    }
  };
  ws.onclose = () => {
    if (S.ws !== ws) return;
    S.ws = null;
    setWs("reconnecting");
    S.wsTimer = setTimeout(connectWs, S.wsDelay);
    S.wsDelay = Math.min(S.wsDelay * 2, 15000);
  };
}

function addEvent(ev, live) {
  if (!ev || !ev.id || S.seen.has(ev.id)) return;
  S.seen.add(ev.id);
  S.lastId = ev.id;
  S.feed.unshift(ev);
  if (S.feed.length > FEED_MAX) {
    for (const old of S.feed.splice(FEED_MAX)) S.seen.delete(old.id);
  }
  if (ev.label && !S.labels.has(ev.label)) {
    S.labels.add(ev.label);
    renderFeedFilters();
  }
  lookUpName(ev.camera_id);
  if (!live) return;
  if (feedMatches(ev)) {
    const list = $("#event-feed");
    list.querySelector(".empty")?.remove();
    list.prepend(eventItem(ev, false, true));
    while (list.children.length > FEED_MAX) list.lastElementChild.remove();
  }
  if (ev.camera_id === S.camId) {
    if (ev.type === "detection" && S.liveMode === "mp4") showDetection(ev);
    S.camEvents.unshift(ev);
    $("#camera-events").prepend(eventItem(ev, true, true));
    if (ev.type === "status" || ev.type === "quality") {
      S.camHealth.unshift(ev);
      $("#camera-health").querySelector(".empty")?.remove();
      $("#camera-health").prepend(eventItem(ev, true, true));
    }
  }
}

async function lookUpName(id) {
  if (S.names.has(id) || S.asked.has(id)) return;
  S.asked.add(id);
  try {
    const cam = await api(`/api/v1/cameras/${encodeURIComponent(id)}`);
    setName(id, cam.name);
  } catch {
    // a camera of a tier below, or one deleted since: its id stands in for its name
  }
}

function setName(id, name) {
  if (S.names.get(id) === name) return;
  S.names.set(id, name);
  for (const el of document.querySelectorAll(".cam-link")) if (el.dataset.cameraId === id) el.textContent = name;
}

function feedMatches(ev) {
  const type = $("#feed-filter-type").value;
  const label = $("#feed-filter-label").value;
  return (!type || ev.type === type) && (!label || ev.label === label);
}

function renderFeedFilters() {
  const sel = $("#feed-filter-label");
  const current = sel.value;
  const opts = [h("option", { value: "" }, t("feed.label.all"))];
  for (const l of [...S.labels].sort()) opts.push(h("option", { value: l }, `${tOr("label", l)}${tOr("label", l) !== l ? ` (${l})` : ""}`));
  sel.replaceChildren(...opts);
  sel.value = current;
}

function renderFeed() {
  const items = S.feed.filter(feedMatches).map((ev) => eventItem(ev));
  const empty = S.feedDenied ? [] : [h("li", { class: "muted empty" }, t("feed.empty"))];
  $("#event-feed").replaceChildren(...(items.length ? items : empty));
}

function snapshotUrl(ev) {
  return `${ev.snapshot}?token=${encodeURIComponent(S.token)}`;
}

function eventItem(ev, compact = false, fresh = false) {
  const head = [h("span", { class: `type type-${ev.type}` }, t(`type.${ev.type}`))];
  if (ev.type === "detection" || ev.label) {
    head.push(h("strong", { class: "event-label" }, tOr("label", ev.label)));
  }
  if (ev.type === "quality") head.push(h("strong", { class: "event-label" }, tOr("quality", ev.reason || "")));
  if (ev.type === "status") head.push(stateBadge(ev.state || "offline"));
  if (ev.score != null) head.push(h("span", { class: "score" }, ev.score.toFixed(2)));
  if (ev.phase) head.push(h("span", { class: "phase" }, t(`phase.${ev.phase}`)));
  if (ev.zone) head.push(h("span", { class: "rule-ref" }, ev.zone));
  if (ev.direction) head.push(h("span", { class: `direction dir-${ev.direction}` }, t(`dir.${ev.direction}`)));
  const body = h("div", { class: "event-body" }, h("div", { class: "event-head" }, head));
  if (!compact) {
    body.append(h("div", { class: "small" }, h("button", { type: "button", class: "link cam-link",
      dataset: { cameraId: ev.camera_id }, onclick: () => { location.hash = `#/camera/${ev.camera_id}`; } },
    S.names.get(ev.camera_id) || ev.camera_id)));
  }
  if (ev.type === "status" && ev.reason) body.append(h("div", { class: "small muted reason" }, ev.reason));
  body.append(h("time", { class: "small muted", datetime: ev.ts }, clockTime(ev.ts)));
  const thumb = ev.snapshot
    ? h("img", { class: "event-thumb", src: snapshotUrl(ev), alt: `${ev.label || ev.type} ${ev.score ?? ""}`.trim(),
      loading: compact ? "lazy" : null, decoding: "async" })
    : h("span", { class: `event-thumb none type-${ev.type}`, dataset: { state: ev.state || "" }, "aria-hidden": "true" },
      ev.type === "quality" ? "⚠" : ev.type === "status" ? "●" : "◌");
  return h("li", { class: `event type-${ev.type}${fresh ? " fresh" : ""}`, dataset: { eventId: ev.id, type: ev.type, label: ev.label || "",
    cameraId: ev.camera_id } }, thumb, body);
}

// ---- camera page -----------------------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/camera\/([0-9A-Za-z_-]+)$/);
  if (m) openCamera(m[1]);
  else closeCamera();
}

function closeCamera() {
  S.camId = null;
  S.camera = null;
  stopLive();
  showRecordings(null, false);
  $("#camera-page").hidden = true;
  $("#overview").hidden = false;
  refreshThumbs();
}

async function openCamera(id) {
  if (!S.me) return;
  S.camId = id;
  $("#overview").hidden = true;
  $("#camera-page").hidden = false;
  $("#cam-name").textContent = S.names.get(id) || id;
  $("#cam-id").textContent = id;
  $("#settings-message").textContent = "";
  $("#camera-events").replaceChildren();
  $("#camera-health").replaceChildren();
  S.camErrors = [null, null];
  try {
    S.camera = await api(`/api/v1/cameras/${id}`);
  } catch (e) {
    $("#settings-message").textContent = errorText(e);
    return;
  }
  if (S.camId !== id) return;
  renderCamera();
  fillSettings(S.camera);
  showRules(S.camera, S.me.you.role === "admin");
  S.camCounts = null;
  renderCamCounts();
  refreshCamCounts();
  startLive();
  showRecordings(id, canWatch());
  loadCameraLists(id);
}

async function refreshCameraFacts() {
  const id = S.camId;
  const cam = await api(`/api/v1/cameras/${id}`);
  if (S.camId !== id) return;
  S.camera = cam;
  renderCamera();
}

function renderCamera() {
  const cam = S.camera;
  if (!cam) return;
  const st = cam.status || {};
  setName(cam.id, cam.name);
  $("#cam-name").textContent = cam.name;
  const badge = $("#cam-state");
  badge.className = `badge state-${st.state}`;
  badge.dataset.state = st.state;
  badge.textContent = t(`state.${st.state}`);
  setShed($("#cam-shed"), st);
  $("#live-view").alt = t("cam.live.aria", { name: cam.name });
  const fact = (k, v, id) => [h("dt", {}, t(k)), h("dd", { id }, v ?? t("unknown"))];
  const faults = (st.quality || []).map((q) => tOr("quality", q)).join(", ") || t("cam.quality.none");
  $("#cam-facts").replaceChildren(...[
    fact("cam.status", `${t(`state.${st.state}`)} · ${st.last_frame_at ? ago(st.last_frame_at) : t("cams.noframe")}`, "fact-state"),
    fact("cam.resolution", st.width ? `${st.width}×${st.height} ${st.codec || ""}` : null),
    fact("cam.fps", `${(st.fps_in ?? 0).toFixed(1)} / ${(st.fps_analyzed ?? 0).toFixed(1)}`, "fact-fps"),
    fact("cam.analysis", rateText(st, "cam.analysis.rate"), "fact-analysis"),
    fact("cam.skipped", skippedText(st.skipped) || t("cam.skipped.none"), "fact-skipped"),
    fact("cam.inference", st.inference_ms != null ? `${st.inference_ms} ms` : null),
    fact("cam.reconnects", String(st.reconnects ?? 0)),
    fact("cam.quality", faults),
    fact("cam.node", cam.node),
    fact("cam.gateway", st.gateway || t("cam.gateway.none"), "fact-gateway"),
    fact("cam.source", st.source ? tOr("source", st.source) : null),
    fact("cam.lasterror", st.last_error),
  ].flat());
}

function fillSettings(cam) {
  const admin = S.me.you.role === "admin";
  $("#settings-fields").disabled = !admin;
  $("#settings-readonly").hidden = admin;
  $("#set-name").value = cam.name;
  $("#set-enabled").checked = cam.enabled;
  $("#set-fps").value = cam.analytics?.fps ?? "";
  $("#set-labels").value = (cam.analytics?.labels || []).join(", ");
  $("#set-min-score").value = cam.analytics?.min_score ?? "";
}

async function saveSettings(event) {
  event.preventDefault();
  const cam = S.camera;
  if (!cam) return;
  const msg = $("#settings-message");
  const num = (sel) => {
    const raw = $(sel).value.trim();
    return raw === "" ? NaN : Number(raw);
  };
  const labels = $("#set-labels").value.split(",").map((s) => s.trim()).filter(Boolean);
  const patch = {};
  const analytics = {};
  if ($("#set-name").value !== cam.name) patch.name = $("#set-name").value;
  if ($("#set-enabled").checked !== cam.enabled) patch.enabled = $("#set-enabled").checked;
  // A value the form cannot read as a number goes as it was typed: the API names the problem.
  const fps = num("#set-fps");
  if (fps !== cam.analytics?.fps) analytics.fps = Number.isNaN(fps) ? $("#set-fps").value : fps;
  const score = num("#set-min-score");
  if (score !== cam.analytics?.min_score) analytics.min_score = Number.isNaN(score) ? $("#set-min-score").value : score;
  if (labels.join(",") !== (cam.analytics?.labels || []).join(",")) analytics.labels = labels.length ? labels : null;
  if (Object.keys(analytics).length) patch.analytics = analytics;
  if (!Object.keys(patch).length) {
    msg.dataset.kind = "ok";
    msg.textContent = t("set.saved");
    return;
  }
  $("#settings-save").disabled = true;
  try {
    S.camera = await api(`/api/v1/cameras/${cam.id}`, { method: "PATCH", body: patch });
    fillSettings(S.camera);
    renderCamera();
    msg.dataset.kind = "ok";
    msg.textContent = t("set.saved");
    if ("enabled" in patch) startLive();
  } catch (e) {
    msg.dataset.kind = "error";
    msg.textContent = t("set.failed", { msg: errorText(e) });
  } finally {
    $("#settings-save").disabled = false;
  }
}

async function loadCameraLists(id) {
  if (!canWatch()) {
    S.camEvents = [];
    S.camHealth = [];
    const denied = new ApiError(403, t("err.forbidden"));
    S.camErrors = [denied, denied];
    renderCameraLists();
    return;
  }
  const q = (extra) => `/api/v1/events?${new URLSearchParams({ camera: id, limit: "30", ...extra })}`;
  const [events, health] = await Promise.allSettled([api(q({})), api(q({ type: "status,quality" }))]);
  if (S.camId !== id) return;
  S.camEvents = events.status === "fulfilled" ? events.value.events : [];
  S.camHealth = health.status === "fulfilled" ? health.value.events : [];
  S.camErrors = [events, health].map((r) => (r.status === "rejected" ? r.reason : null));
  renderCameraLists();
}

function renderCameraLists() {
  const [eventsError, healthError] = S.camErrors;
  const fill = (sel, items, error, empty) => $(sel).replaceChildren(...(
    error ? [h("li", { class: "error" }, errorText(error))]
      : items.length ? items.map((ev) => eventItem(ev, true)) : [h("li", { class: "muted empty" }, empty)]));
  fill("#camera-events", S.camEvents, eventsError, t("feed.empty"));
  fill("#camera-health", S.camHealth, healthError, t("cam.health.empty"));
}

function liveUrl(id) {
  const q = new URLSearchParams({ fps: "5", width: "960", token: S.token });
  return `/api/v1/cameras/${id}/live.mjpeg?${q}`;
}

// The live view plays the camera's own stream (live.mp4) in a <video>, detections drawn over it from the event
// stream; where the browser cannot play its codec, or live.mp4 fails, the MJPEG view with boxes drawn by the
// gateway (live.mjpeg) stands in.
async function startLive() {
  stopLive();
  const id = S.camId;
  if (!canWatch()) {
    const overlay = $("#live-overlay");
    overlay.textContent = t("cam.live.off", { msg: t("err.forbidden") });
    overlay.hidden = false;
    return;
  }
  const video = $("#live-video");
  video.hidden = false;
  $("#live-view").hidden = true;
  setLiveMode("mp4", "");
  S.liveFigure = setInterval(renderLiveMode, LIVE_FIGURE_MS);
  try {
    await startVideo(video, `/api/v1/cameras/${id}/live.mp4`, authHeaders(), () => {
      if (S.camId === id) S.liveRetry = setTimeout(startLive, LIVE_RESTART_MS);
    });
    if (S.camId !== id) return;
    S.liveCodecs = video.dataset.codecs || "";
    $("#live-overlay").hidden = true;
    layout();
    renderLiveMode();
  } catch (e) {
    if (S.camId !== id || e?.name === "AbortError") return;
    S.liveCodecs = e?.codecs || "";
    startMjpeg(id, e?.reason === "codec" ? "codec" : "error");
  }
}

function startMjpeg(id, why) {
  stopVideo($("#live-video"));
  $("#live-video").hidden = true;
  const img = $("#live-view");
  img.hidden = false;
  setLiveMode("mjpeg", why);
  img.onload = () => { $("#live-overlay").hidden = true; };
  img.onerror = async () => {
    if (S.camId !== id) return;
    // An <img> cannot tell why it failed: ask the snapshot, which answers the same way with a reason.
    let reason = "";
    try {
      await api(`/api/v1/cameras/${id}/snapshot.jpg?width=64`);
    } catch (e) {
      reason = errorText(e);
    }
    const overlay = $("#live-overlay");
    overlay.textContent = t("cam.live.off", { msg: reason || t("unknown") });
    overlay.hidden = false;
    S.liveRetry = setTimeout(() => { if (S.camId === id) startLive(); }, 5000);
  };
  img.src = liveUrl(id);
}

function setLiveMode(mode, why) {
  S.liveMode = mode;
  S.liveFallback = why;
  const frame = $("#live-frame");
  frame.dataset.mode = mode;
  frame.dataset.fallback = why;
  renderLiveMode();
}

function renderLiveMode() {
  const el = $("#live-mode");
  const video = $("#live-video");
  const latency = video.dataset.latency;
  // "capture": from the camera's own clock (RTSP sender reports); otherwise from the frame's receipt here.
  const label = video.dataset.clock === "capture" ? "live.latency.capture" : "live.latency";
  if (S.liveMode === "mp4") {
    el.textContent = t("live.mode.mp4", { codecs: S.liveCodecs || "…" })
      + (latency ? ` · ${t(label, { s: Number(latency).toFixed(2) })}` : "");
  } else if (S.liveMode === "mjpeg") {
    el.textContent = S.liveFallback === "codec" ? t("live.mode.mjpeg.codec", { codecs: S.liveCodecs })
      : t("live.mode.mjpeg");
  } else {
    el.textContent = "";
  }
}

function stopLive() {
  clearTimeout(S.liveRetry);
  clearInterval(S.liveFigure);
  stopVideo($("#live-video"));
  clearDetections();
  const img = $("#live-view");
  img.onerror = null;
  img.removeAttribute("src"); // closes the MJPEG connection
  $("#live-overlay").hidden = true;
  S.liveMode = "";
}

// ---- language --------------------------------------------------------------------------------------

function switchLanguage() {
  setLang(lang() === "zh" ? "en" : "zh");
  applyStatic();
  if (!S.me) return;
  const you = S.me.you;
  $("#whoami").textContent = t("top.role", { name: you.name, role: tOr("role", you.role), node: you.node });
  setWs($("#ws-status").dataset.state);
  if (S.feedDenied) $("#feed-error").textContent = t("err.forbidden");
  renderOverload();
  renderTree();
  renderGrid();
  renderFeedFilters();
  renderFeed();
  renderNodeCounts();
  if (S.camera) {
    relabel();
    relabelRecordings();
    renderLiveMode();
    renderCamCounts();
    renderCamera();
    renderCameraLists();
    if (!canWatch()) startLive(); // its refusal, in the new language
  }
  clock();
}

// ---- wiring ----------------------------------------------------------------------------------------

function boot() {
  applyStatic();
  setWs("connecting");
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("#token-input").value.trim();
    if (!token) return;
    $("#login-button").disabled = true;
    try {
      await signIn(token);
    } catch (err) {
      showLogin(err instanceof ApiError && err.status === 401 ? t("login.bad")
        : t("login.failed", { msg: err.message }));
    } finally {
      $("#login-button").disabled = false;
    }
  });
  $("#login-lang").addEventListener("click", switchLanguage);
  $("#lang-switch").addEventListener("click", switchLanguage);
  $("#logout-button").addEventListener("click", () => signOut());
  $("#camera-search").addEventListener("input", renderGrid);
  $("#camera-filter-state").addEventListener("change", renderGrid);
  $("#feed-filter-type").addEventListener("change", renderFeed);
  $("#feed-filter-label").addEventListener("change", renderFeed);
  $("#back-button").addEventListener("click", () => { location.hash = "#/"; });
  $("#settings-form").addEventListener("submit", saveSettings);
  initRules({ api, errorText, onSaved: (cam) => {
    S.camera = cam;
    renderCamera();
    refreshCamCounts();
  } });
  initRecordings({ api, errorText, token: () => S.token, node: () => S.me?.node || "" });
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (!S.camId) return;
    if (document.hidden) stopLive();
    else startLive();
  });
  if (S.token) {
    signIn(S.token).catch((err) => {
      sessionStorage.removeItem("se.token");
      showLogin(err instanceof ApiError && err.status === 401 ? t("login.expired") : err.message);
    });
  } else {
    showLogin();
  }
}

boot();
