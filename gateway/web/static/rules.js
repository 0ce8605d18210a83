// Zones and lines of one camera, drawn over its live picture; administrators draw and edit them there and
// save them through PATCH /api/v1/cameras/{id} (analytics.zones, analytics.lines). Coordinates are shares of
// the picture (0..1, y down), as the API keeps them (docs/rules.md).

import { t } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";
const HANDLE_R = 6; // px: a point's handle
const CLOSE_PX = 12; // a click this close to a zone's first corner closes it
const ARROW_PX = 28; // length of the arrow that shows a line's "in" side
const DIGITS = 4; // coordinates saved to 1/10,000 of the picture
const $ = (sel) => document.querySelector(sel);

const R = {
  api: null, // (path, {method, body}) -> JSON, throws ApiError
  errorText: String,
  onSaved: null, // (camera) after a save
  camera: null,
  admin: false,
  zones: [], // [{name, polygon: [[x, y], ...], labels?, loiter_s?}]
  lines: [], // [{name, a: [x, y], b: [x, y], labels?}]
  mode: "", // "" | "line" | "zone": what a click on the picture adds
  draft: [], // points placed in the current mode
  cursor: null, // [x, y] under the pointer while drawing
  drag: null, // {kind, i, pt}: the handle being dragged
  selected: null, // "zone:0" | "line:1"
  dirty: false,
  box: { w: 0, h: 0 }, // the picture's rendered size (px)
};

const clamp01 = (v) => Math.min(1, Math.max(0, v));
const round = (v) => Math.round(v * 10 ** DIGITS) / 10 ** DIGITS;
const px = ([x, y]) => [x * R.box.w, y * R.box.h];

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "value") node.value = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c != null && c !== false) node.append(c);
  return node;
}

/** Wire the editor once: the page's API client, its error wording and what to do after a save. */
export function initRules({ api, errorText, onSaved }) {
  Object.assign(R, { api, errorText, onSaved });
  const svg = $("#rules-layer");
  svg.addEventListener("pointerdown", onDown);
  svg.addEventListener("pointermove", onMove);
  svg.addEventListener("pointerup", onUp);
  svg.addEventListener("pointercancel", onUp);
  $("#rules-add-line").addEventListener("click", () => setMode("line"));
  $("#rules-add-zone").addEventListener("click", () => setMode("zone"));
  $("#rules-finish").addEventListener("click", finishZone);
  $("#rules-cancel").addEventListener("click", () => setMode(""));
  $("#rules-save").addEventListener("click", save);
  $("#live-view").addEventListener("load", layout);
  $("#live-video").addEventListener("resize", layout); // the live video's size is known (or changed)
  new ResizeObserver(layout).observe($(".live-frame"));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && R.mode) setMode(""); });
}

/** Show a camera's rules (on opening its page, and after a save); an edit in progress is dropped. */
export function showRules(camera, admin) {
  const a = camera?.analytics || {};
  Object.assign(R, {
    camera, admin, mode: "", draft: [], drag: null, selected: null, dirty: false,
    zones: structuredClone(a.zones || []), lines: structuredClone(a.lines || []),
  });
  $("#rules-message").textContent = "";
  layout();
  renderAll();
}

/** Redraw in the current language. */
export function relabel() {
  renderAll();
}

// The picture's own size: the live video's when it plays, else the MJPEG picture's.
function pictureSize() {
  const video = $("#live-video");
  if (!video.hidden && video.videoWidth) return [video.videoWidth, video.videoHeight];
  const img = $("#live-view");
  return [img.naturalWidth || 16, img.naturalHeight || 9];
}

// The picture keeps its aspect inside the frame (object-fit: contain): the layers cover the picture only.
export function layout() {
  const frame = $(".live-frame");
  const svg = $("#rules-layer");
  const fw = frame.clientWidth;
  const fh = frame.clientHeight;
  const [nw, nh] = pictureSize();
  const scale = Math.min(fw / nw, fh / nh) || 0;
  const w = Math.round(nw * scale);
  const hgt = Math.round(nh * scale);
  if (w === R.box.w && hgt === R.box.h) return;
  R.box = { w, h: hgt };
  for (const layer of [svg, $("#boxes-layer")]) {
    Object.assign(layer.style, { left: `${Math.round((fw - w) / 2)}px`, top: `${Math.round((fh - hgt) / 2)}px`,
      width: `${w}px`, height: `${hgt}px` });
  }
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  draw();
}

function renderAll() {
  const admin = R.admin;
  $("#rules-tools").hidden = !admin;
  $("#rules-finish").hidden = R.mode !== "zone";
  $("#rules-cancel").hidden = !R.mode;
  $("#rules-save").disabled = !R.dirty;
  $("#rules-layer").dataset.mode = R.mode;
  $("#rules-layer").dataset.admin = admin ? "true" : "false";
  $("#rules-hint").textContent = !admin ? t("rules.hint.readonly")
    : R.mode === "line" ? t("rules.hint.line") : R.mode === "zone" ? t("rules.hint.zone") : t("rules.hint.idle");
  draw();
  renderList();
}

function setMode(mode) {
  R.mode = mode;
  R.draft = [];
  R.cursor = null;
  renderAll();
}

function uniqueName(base) {
  const taken = new Set([...R.zones, ...R.lines].map((r) => r.name));
  for (let n = 1; ; n += 1) if (!taken.has(`${base} ${n}`)) return `${base} ${n}`;
}

function changed() {
  R.dirty = true;
  $("#rules-save").disabled = false;
  $("#rules-message").dataset.kind = "";
  $("#rules-message").textContent = t("rules.unsaved");
}

function finishZone() {
  if (R.draft.length >= 3) {
    R.zones.push({ name: uniqueName(t("rules.kind.zone").toLowerCase()), polygon: R.draft });
    R.selected = `zone:${R.zones.length - 1}`;
    changed();
  }
  setMode("");
}

function where(e) {
  const r = $("#rules-layer").getBoundingClientRect();
  return [clamp01((e.clientX - r.left) / r.width), clamp01((e.clientY - r.top) / r.height)];
}

function onDown(e) {
  if (!R.admin) return;
  const p = where(e);
  if (R.mode === "line") {
    R.draft.push(p);
    if (R.draft.length === 2) {
      R.lines.push({ name: uniqueName(t("rules.kind.line").toLowerCase()), a: R.draft[0], b: R.draft[1] });
      R.selected = `line:${R.lines.length - 1}`;
      changed();
      setMode("");
      return;
    }
    draw();
    return;
  }
  if (R.mode === "zone") {
    if (R.draft.length >= 3) {
      const [fx, fy] = px(R.draft[0]);
      const [x, y] = px(p);
      if (Math.hypot(fx - x, fy - y) <= CLOSE_PX) {
        finishZone();
        return;
      }
    }
    R.draft.push(p);
    draw();
    return;
  }
  const handle = e.target.closest?.(".handle");
  if (!handle) return;
  const { kind, i, pt } = handle.dataset;
  R.drag = { kind, i: Number(i), pt };
  R.selected = `${kind}:${i}`;
  $("#rules-layer").setPointerCapture(e.pointerId);
  e.preventDefault();
}

function onMove(e) {
  if (R.mode) {
    R.cursor = where(e);
    draw();
    return;
  }
  if (!R.drag) return;
  const p = where(e);
  const { kind, i, pt } = R.drag;
  if (kind === "zone") R.zones[i].polygon[Number(pt)] = p;
  else R.lines[i][pt] = p;
  draw();
}

function onUp(e) {
  if (!R.drag) return;
  R.drag = null;
  $("#rules-layer").releasePointerCapture?.(e.pointerId);
  changed();
  renderList();
}

function draw() {
  const svg = $("#rules-layer");
  if (!svg) return;
  const nodes = [];
  const editing = R.admin && !R.mode;
  R.zones.forEach((z, i) => {
    const pts = z.polygon.map(px);
    const sel = R.selected === `zone:${i}`;
    nodes.push(el("polygon", { class: `zone${sel ? " selected" : ""}`, points: pts.map((p) => p.join(",")).join(" "),
      "data-name": z.name }));
    const [lx, ly] = pts.reduce(([ax, ay], [x, y]) => (y < ay || (y === ay && x < ax) ? [x, y] : [ax, ay]));
    nodes.push(el("text", { class: "rule-name zone-name", x: lx + 4, y: ly - 6 }, z.name));
    if (editing) pts.forEach(([x, y], k) => nodes.push(handle(x, y, "zone", i, k)));
  });
  R.lines.forEach((ln, i) => {
    const [ax, ay] = px(ln.a);
    const [bx, by] = px(ln.b);
    const sel = R.selected === `line:${i}`;
    nodes.push(el("line", { class: `tripwire${sel ? " selected" : ""}`, x1: ax, y1: ay, x2: bx, y2: by,
      "data-name": ln.name }));
    // "in": from the left of a -> b to its right as seen (y down); the arrow points to the right side.
    const len = Math.hypot(bx - ax, by - ay) || 1;
    const [nx, ny] = [-(by - ay) / len, (bx - ax) / len];
    const [mx, my] = [(ax + bx) / 2, (ay + by) / 2];
    const [tx, ty] = [mx + nx * ARROW_PX, my + ny * ARROW_PX];
    nodes.push(el("line", { class: "arrow", x1: mx - nx * ARROW_PX * 0.4, y1: my - ny * ARROW_PX * 0.4, x2: tx, y2: ty,
      "marker-end": "url(#rules-arrow)" }));
    nodes.push(el("text", { class: "rule-dir", x: tx + nx * 10, y: ty + ny * 10 + 4, "text-anchor": "middle" },
      t("rules.in")));
    nodes.push(el("text", { class: "rule-end", x: ax - nx * 12, y: ay - ny * 12 + 4, "text-anchor": "middle" }, "A"));
    nodes.push(el("text", { class: "rule-end", x: bx - nx * 12, y: by - ny * 12 + 4, "text-anchor": "middle" }, "B"));
    nodes.push(el("text", { class: "rule-name line-name", x: mx - nx * 16, y: my - ny * 16 - 4,
      "text-anchor": "middle" }, ln.name));
    if (editing) nodes.push(handle(ax, ay, "line", i, "a"), handle(bx, by, "line", i, "b"));
  });
  if (R.mode && R.draft.length) {
    const pts = R.draft.map(px);
    if (R.cursor) pts.push(px(R.cursor));
    nodes.push(el("polyline", { class: `draft draft-${R.mode}`, points: pts.map((p) => p.join(",")).join(" ") }));
    R.draft.map(px).forEach(([x, y]) => nodes.push(el("circle", { class: "draft-point", cx: x, cy: y, r: 4 })));
  }
  const defs = el("defs");
  const marker = el("marker", { id: "rules-arrow", viewBox: "0 0 10 10", refX: 8, refY: 5, markerWidth: 7,
    markerHeight: 7, orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }));
  defs.append(marker);
  svg.replaceChildren(defs, ...nodes);
  svg.toggleAttribute("hidden", !(R.zones.length || R.lines.length || R.mode)); // an SVG element has no .hidden
}

function handle(x, y, kind, i, pt) {
  return el("circle", { class: "handle", cx: x, cy: y, r: HANDLE_R, "data-kind": kind, "data-i": i, "data-pt": pt });
}

function renderList() {
  const admin = R.admin;
  const items = [];
  const row = (kind, i, rule, extra) => {
    const key = `${kind}:${i}`;
    const name = admin
      ? h("input", { class: "rule-name-input", value: rule.name, maxlength: "64", "aria-label": t("rules.name"),
        oninput: (e) => { rule.name = e.target.value; changed(); draw(); } })
      : h("span", { class: "rule-name-text" }, rule.name);
    return h("li", { class: `rule${R.selected === key ? " selected" : ""}`, dataset: { kind, index: String(i) },
      onclick: () => { R.selected = key; draw(); markSelected(); } },
    h("span", { class: `rule-kind kind-${kind}` }, t(`rules.kind.${kind}`)), name, extra);
  };
  R.lines.forEach((ln, i) => items.push(row("line", i, ln, admin ? [
    h("button", { type: "button", class: "rule-reverse", onclick: () => {
      [ln.a, ln.b] = [ln.b, ln.a];
      changed();
      draw();
    } }, t("rules.reverse")),
    h("button", { type: "button", class: "rule-delete", onclick: () => {
      R.lines.splice(i, 1);
      R.selected = null;
      changed();
      renderAll();
    } }, t("rules.delete"))] : null)));
  R.zones.forEach((z, i) => items.push(row("zone", i, z, admin ? [
    h("label", { class: "rule-loiter-label muted small", title: t("rules.loiter") }, t("rules.loiter.short"),
      h("input", { class: "rule-loiter", type: "number", min: "1", step: "1", value: z.loiter_s ?? "",
        "aria-label": t("rules.loiter"),
        oninput: (e) => {
          const raw = e.target.value.trim();
          if (raw === "") delete z.loiter_s;
          else z.loiter_s = Number.isNaN(Number(raw)) ? raw : Number(raw); // the API names a bad value
          changed();
        } })),
    h("button", { type: "button", class: "rule-delete", onclick: () => {
      R.zones.splice(i, 1);
      R.selected = null;
      changed();
      renderAll();
    } }, t("rules.delete"))] : (z.loiter_s ? h("span", { class: "muted small" }, `${t("rules.loiter")} ${z.loiter_s}`)
    : null))));
  $("#rules-list").replaceChildren(...(items.length ? items : [h("li", { class: "muted small empty" }, t("rules.none"))]));
}

function markSelected() {
  for (const li of document.querySelectorAll("#rules-list .rule")) {
    li.classList.toggle("selected", R.selected === `${li.dataset.kind}:${li.dataset.index}`);
  }
}

/** The rules as the API takes them: every field the camera had kept, coordinates rounded. */
function body() {
  const pt = ([x, y]) => [round(x), round(y)];
  return {
    zones: R.zones.map((z) => ({ ...z, polygon: z.polygon.map(pt) })),
    lines: R.lines.map((ln) => ({ ...ln, a: pt(ln.a), b: pt(ln.b) })),
  };
}

async function save() {
  const cam = R.camera;
  if (!cam || !R.admin) return;
  const msg = $("#rules-message");
  $("#rules-save").disabled = true;
  try {
    const saved = await R.api(`/api/v1/cameras/${cam.id}`, { method: "PATCH", body: { analytics: body() } });
    showRules(saved, R.admin);
    msg.dataset.kind = "ok";
    msg.textContent = t("rules.saved");
    R.onSaved?.(saved);
  } catch (e) {
    msg.dataset.kind = "error";
    msg.textContent = t("rules.failed", { msg: R.errorText(e) });
    $("#rules-save").disabled = false;
  }
}
