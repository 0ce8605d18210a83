// A camera's recordings on its page: a timeline of what is recorded (segments as bars, gaps between them) with
// its events as markers, a player for an event's clip (click a marker) or any window (start and end), and a
// download link of what plays. Everything comes from the operator-scoped API (docs/web.md).

import { t } from "./i18n.js";

const $ = (sel) => document.querySelector(sel);
const SPANS_MIN = [10, 60, 360, 1440]; // the timeline covers the last 10 minutes, 1, 6 or 24 hours
const EVENT_TYPES = "detection,zone,line,motion"; // what is marked on the timeline (not status and quality)
const EVENTS_MAX = 200; // markers at most (the API's page)
const DEFAULT_WINDOW_S = 60; // the window player starts with the last minute recorded

const R = {
  api: null, // (path) -> JSON, throws ApiError
  errorText: String,
  token: () => "",
  node: () => "", // this tier's node (event ids since a time are `<node>-<ms>-0`)
  cameraId: null,
  spanMin: SPANS_MIN[0],
  since: 0,
  until: 0,
  listing: null,
  events: [],
  autoWindow: true, // the window form follows the newest recording until the user edits it
};

/** Wire the panel once: the page's API client, its error wording, its token and node. */
export function initRecordings({ api, errorText, token, node }) {
  Object.assign(R, { api, errorText, token, node });
  const span = $("#rec-span");
  span.replaceChildren(...SPANS_MIN.map((m) => {
    const o = document.createElement("option");
    o.value = String(m);
    return o;
  }));
  relabelRecordings();
  span.addEventListener("change", () => { R.spanMin = Number(span.value); refreshRecordings(); });
  $("#rec-refresh").addEventListener("click", refreshRecordings);
  for (const sel of ["#rec-start", "#rec-end"]) $(sel).addEventListener("input", () => { R.autoWindow = false; });
  $("#rec-window").addEventListener("submit", (e) => {
    e.preventDefault();
    playWindow();
  });
}

/** Texts that depend on the language. */
export function relabelRecordings() {
  for (const o of $("#rec-span").options) {
    const m = Number(o.value);
    o.textContent = m < 60 ? t("rec.span.min", { m }) : t("rec.span", { h: m / 60 });
  }
  render();
}

/** Show a camera's recordings (null: none, the page left it). */
export function showRecordings(cameraId, allowed) {
  R.cameraId = cameraId;
  R.autoWindow = true;
  $("#rec-start").value = "";
  $("#rec-end").value = "";
  R.listing = null;
  R.events = [];
  const player = $("#rec-player");
  player.pause();
  player.removeAttribute("src");
  player.load();
  $("#rec-playing").textContent = "";
  $("#rec-download").hidden = true;
  $("#recordings-panel").hidden = !allowed || !cameraId;
  if (cameraId && allowed) refreshRecordings();
}

/** Load the timeline's listing and events again. */
export async function refreshRecordings() {
  const id = R.cameraId;
  if (!id) return;
  R.until = Date.now() / 1000;
  R.since = R.until - R.spanMin * 60;
  const q = new URLSearchParams({ since: iso(R.since), until: iso(R.until) });
  const ev = new URLSearchParams({ camera: id, type: EVENT_TYPES, limit: String(EVENTS_MAX),
    since: `${R.node()}-${Math.floor(R.since * 1000)}-0` });
  const [listing, events] = await Promise.allSettled([
    R.api(`/api/v1/cameras/${id}/recordings?${q}`), R.api(`/api/v1/events?${ev}`)]);
  if (R.cameraId !== id) return;
  R.listing = listing.status === "fulfilled" ? listing.value : null;
  R.events = events.status === "fulfilled" ? events.value.events.filter(marked) : [];
  $("#rec-message").textContent = listing.status === "rejected" ? R.errorText(listing.reason) : "";
  if (R.listing && R.autoWindow) defaultWindow();
  render();
}

function marked(ev) {
  return ev.type !== "detection" || ev.phase !== "update"; // a track's updates would hide its start and end
}

const iso = (s) => new Date(s * 1000).toISOString();
const secs = (isoText) => Date.parse(isoText) / 1000;

// <input type="datetime-local"> holds local time without a zone; the API takes UTC ISO.
function toLocalInput(s) {
  const d = new Date(s * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fromLocalInput(value) {
  const ms = new Date(value).getTime(); // a zone-less date-time string is read as local time
  return Number.isFinite(ms) ? ms / 1000 : NaN;
}

function defaultWindow() {
  const segs = R.listing.segments;
  if (!segs.length) return;
  const end = Math.floor(secs(segs[segs.length - 1].end));
  const start = Math.ceil(Math.max(secs(segs[0].start), end - DEFAULT_WINDOW_S));
  if (end - start < 1) return; // nothing recorded yet to play
  $("#rec-start").value = toLocalInput(start);
  $("#rec-end").value = toLocalInput(end);
}

function render() {
  const line = $("#timeline");
  if (!line || !R.cameraId) return;
  const span = R.until - R.since || 1;
  const at = (s) => `${(Math.min(1, Math.max(0, (s - R.since) / span)) * 100).toFixed(3)}%`;
  const width = (a, b) => `${(Math.max(0.15, ((Math.min(b, R.until) - Math.max(a, R.since)) / span) * 100)).toFixed(3)}%`;
  const items = [];
  const segs = R.listing?.segments || [];
  const gaps = R.listing?.gaps || [];
  for (const s of segs) {
    const a = secs(s.start);
    const b = secs(s.end);
    items.push(bar("seg", a, b, at, width, `${clock(a)}–${clock(b)} · ${s.codec} · ${(s.bytes / 1e6).toFixed(1)} MB`,
      () => playRange(a, b)));
  }
  for (const g of gaps) {
    const a = secs(g.start);
    const b = secs(g.end);
    items.push(bar("gap", a, b, at, width, `${t("rec.gap")} ${clock(a)}–${clock(b)}: ${g.reason}`));
  }
  for (const ev of R.events) items.push(marker(ev, at));
  items.push(axis(at));
  line.replaceChildren(...items);
  line.dataset.segments = String(segs.length);
  line.dataset.gaps = String(gaps.length);
  line.dataset.events = String(R.events.length);
  $("#rec-summary").textContent = R.listing
    ? t("rec.summary", { n: segs.length, gaps: gaps.length, events: R.events.length }) : "";
}

function bar(kind, a, b, at, width, title, onclick) {
  const el = document.createElement(onclick ? "button" : "div");
  el.className = `tl-${kind}`;
  if (onclick) {
    el.type = "button";
    el.addEventListener("click", onclick);
  }
  el.title = title;
  el.dataset.start = iso(a);
  el.style.left = at(a);
  el.style.width = width(a, b);
  return el;
}

function marker(ev, at) {
  const el = document.createElement("button");
  el.type = "button";
  el.className = `tl-event type-${ev.type}`;
  el.dataset.eventId = ev.id;
  el.title = `${clock(secs(ev.ts))} ${ev.label || ev.type}${ev.score != null ? ` ${ev.score.toFixed(2)}` : ""}`;
  el.setAttribute("aria-label", t("rec.event.aria", { what: el.title }));
  el.style.left = at(secs(ev.ts));
  el.addEventListener("click", () => playClip(ev));
  return el;
}

function axis(at) {
  const el = document.createElement("div");
  el.className = "tl-axis";
  const ticks = 6;
  for (let i = 0; i <= ticks; i += 1) {
    const s = R.since + ((R.until - R.since) * i) / ticks;
    const tick = document.createElement("span");
    tick.style.left = at(s);
    tick.textContent = clock(s, false);
    el.append(tick);
  }
  return el;
}

function clock(s, seconds = true) {
  return new Date(s * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit",
    second: seconds ? "2-digit" : undefined, hour12: false });
}

function withToken(path, extra = {}) {
  return `${path}?${new URLSearchParams({ ...extra, token: R.token() })}`;
}

/** Play an event's clip (its camera's pre_s before it to post_s after it). */
function playClip(ev) {
  const path = `/api/v1/events/${encodeURIComponent(ev.id)}/clip.mp4`;
  play(withToken(path), withToken(path, { download: "1" }),
    t("rec.playing.clip", { what: `${ev.label || ev.type} ${clock(secs(ev.ts))}` }), ev.id);
}

function playRange(a, b) {
  R.autoWindow = false;
  $("#rec-start").value = toLocalInput(a);
  $("#rec-end").value = toLocalInput(b);
  playWindow();
}

/** Play the window the form names (recording.mp4, at most an hour). */
function playWindow() {
  const a = fromLocalInput($("#rec-start").value);
  const b = fromLocalInput($("#rec-end").value);
  if (!Number.isFinite(a) || !Number.isFinite(b) || b <= a) {
    $("#rec-message").textContent = t("rec.window.bad");
    return;
  }
  $("#rec-message").textContent = "";
  const path = `/api/v1/cameras/${R.cameraId}/recording.mp4`;
  const q = { start: iso(a), end: iso(b) };
  play(withToken(path, q), withToken(path, { ...q, download: "1" }),
    t("rec.playing.window", { a: clock(a), b: clock(b) }), "");
}

function play(src, download, what, eventId) {
  const player = $("#rec-player");
  player.dataset.eventId = eventId;
  player.onerror = () => {
    $("#rec-message").textContent = t("rec.play.failed", { msg: player.error?.message || t("unknown") });
  };
  player.src = src;
  player.play().catch(() => {});
  $("#rec-playing").textContent = what;
  const link = $("#rec-download");
  link.href = download;
  link.hidden = false;
}
