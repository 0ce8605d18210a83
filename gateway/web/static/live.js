// A camera's live view at its own quality: live.mp4 (fragmented MP4 of the camera's stream, never re-encoded)
// appended to a <video> through Media Source Extensions, kept near the live edge, with the detections of the
// event stream drawn over it. The caller falls back to MJPEG (live.mjpeg) when the browser cannot play the
// codec the server names (X-Codecs: H.265 in Chromium without a hardware decoder) or when live.mp4 fails.

const LIVE_EDGE_S = 1.0; // the picture may trail the newest buffered frame by this much; further behind: jump
const EDGE_LAND_S = 0.1; // a jump lands this far before the newest frame (a few frames to play on)
const KEEP_BEHIND_S = 10; // video older than this behind the playhead is removed from the buffer (memory)
const TRIM_EVERY_S = 5; // how often that removal is considered
const BOX_TTL_MS = 3000; // a track's box stays this long after its last event (its "end" removes it at once)
const LATENCY_KEPT = 600; // latency samples kept on the element (a minute at 10 fps) for tests and the bench
const LATENCY_MEDIAN_OF = 25; // the figure shown is the median of this many recent frames
const SVG = "http://www.w3.org/2000/svg";

const V = {
  abort: null, // AbortController of the live.mp4 request
  playing: false, // the video showed a frame of this stream
  boxes: new Map(), // track id (or event id) -> {ev, at}
  boxTimer: null,
};

/** Whether this browser can play the live stream `codecs` (RFC 6381) through Media Source Extensions. */
export function canPlay(codecs) {
  return Boolean(codecs && window.MediaSource && MediaSource.isTypeSupported(`video/mp4; codecs="${codecs}"`));
}

/**
 * Play a camera's live.mp4 in `video`. Resolves when its first frame shows; rejects with {reason, codecs,
 * message} when the browser cannot play it ("codec") or it fails before a frame ("error"). `onEnd` is
 * called when a stream that played ends (the camera reconnected: start again).
 */
export async function startVideo(video, url, headers, onEnd) {
  stopVideo(video);
  const abort = new AbortController();
  V.abort = abort;
  V.playing = false;
  const r = await fetch(url, { headers, signal: abort.signal, cache: "no-store" });
  if (!r.ok) {
    abort.abort();
    throw { reason: "error", message: await errorMessage(r) };
  }
  const codecs = r.headers.get("X-Codecs");
  if (!canPlay(codecs)) {
    abort.abort();
    throw { reason: "codec", codecs: codecs || "?" };
  }
  video.dataset.codecs = codecs;
  const offset = Number(r.headers.get("X-Live-Wall-Offset"));
  video.dataset.clock = r.headers.get("X-Live-Clock") || "receipt";
  const ms = new MediaSource();
  video.src = URL.createObjectURL(ms);
  await new Promise((resolve) => ms.addEventListener("sourceopen", resolve, { once: true }));
  const sb = ms.addSourceBuffer(`video/mp4; codecs="${codecs}"`);
  const first = new Promise((resolve, reject) => {
    video.addEventListener("playing", resolve, { once: true });
    video.addEventListener("error", () => reject({ reason: "error", message: video.error?.message || "" }),
      { once: true });
  });
  if (Number.isFinite(offset) && offset > 0) measureLatency(video, offset, abort.signal);
  feed(r.body.getReader(), ms, sb, video, abort, onEnd);
  await first;
  V.playing = true;
  video.dataset.mode = "mp4";
}

/** Stop the live video (closes its live.mp4 request) and forget its boxes. */
export function stopVideo(video) {
  if (V.abort) V.abort.abort();
  V.abort = null;
  if (video.src) {
    URL.revokeObjectURL(video.src);
    video.removeAttribute("src");
    video.load();
  }
  delete video.dataset.mode;
  V.boxes.clear();
  drawBoxes();
}

async function errorMessage(r) {
  try {
    return (await r.json()).error.message;
  } catch {
    return `HTTP ${r.status}`;
  }
}

// Chunks of the response are appended in order; one SourceBuffer operation at a time (append or trim).
async function feed(reader, ms, sb, video, abort, onEnd) {
  const queue = [];
  let lastTrim = 0;
  const pump = () => {
    if (sb.updating || abort.signal.aborted || ms.readyState !== "open") return;
    const now = video.currentTime;
    if (now - lastTrim > TRIM_EVERY_S && sb.buffered.length && sb.buffered.start(0) < now - KEEP_BEHIND_S) {
      lastTrim = now;
      sb.remove(0, now - KEEP_BEHIND_S);
      return;
    }
    if (!queue.length) return;
    const data = queue.length === 1 ? queue[0] : concat(queue);
    queue.length = 0;
    try {
      sb.appendBuffer(data);
    } catch (err) {
      abort.abort(); // the buffer refused it (quota, a broken stream): this stream is over
    }
  };
  sb.addEventListener("updateend", () => {
    keepAtEdge(video);
    pump();
  });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      queue.push(value);
      pump();
    }
  } catch {
    // aborted (the page left the camera) or the connection broke
  }
  if (!abort.signal.aborted && V.playing && onEnd) onEnd();
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// A live picture stays live: a viewer that fell behind (a busy tab, a stall) jumps to the newest frames.
function keepAtEdge(video) {
  const b = video.buffered;
  if (!b.length) return;
  const start = b.start(b.length - 1);
  const end = b.end(b.length - 1);
  if (video.currentTime < start || end - video.currentTime > LIVE_EDGE_S) {
    video.currentTime = Math.max(start, end - EDGE_LAND_S);
  }
  if (video.paused) video.play().catch(() => {});
}

// Capture (X-Live-Clock "capture": the camera's sender reports) or gateway receipt to screen: a frame of media
// time t was captured / reached the gateway at t + offset (X-Live-Wall-Offset, wall clock); it is on screen at
// expectedDisplayTime (this machine's clock: the figure is right when the clocks agree, as on one machine or
// under NTP).
function measureLatency(video, offset, signal) {
  const samples = [];
  video.liveLatencies = samples;
  const onFrame = (now, meta) => {
    if (signal.aborted) return;
    const shownAt = (performance.timeOrigin + meta.expectedDisplayTime) / 1000;
    samples.push(shownAt - (meta.mediaTime + offset));
    if (samples.length > LATENCY_KEPT) samples.shift();
    const recent = samples.slice(-LATENCY_MEDIAN_OF).sort((a, b) => a - b);
    video.dataset.latency = recent[Math.floor(recent.length / 2)].toFixed(3);
    video.requestVideoFrameCallback(onFrame);
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
}

// ---- detections over the picture ----------------------------------------------------------------------

/** A detection event of the camera shown: its box is drawn (and replaced by the track's next one). */
export function showDetection(ev) {
  if (!Array.isArray(ev.box) || ev.box.length !== 4) return;
  const key = ev.track_id != null ? `t${ev.track_id}` : ev.id;
  if (ev.phase === "end") V.boxes.delete(key);
  else V.boxes.set(key, { ev, at: Date.now() });
  drawBoxes();
  clearTimeout(V.boxTimer);
  if (V.boxes.size) V.boxTimer = setTimeout(drawBoxes, BOX_TTL_MS);
}

/** Forget every box (another camera, or the live view stopped). */
export function clearDetections() {
  V.boxes.clear();
  drawBoxes();
}

// Shares of the picture as SVG percentages: the layer covers the picture exactly (rules.js lays it out).
function drawBoxes() {
  const layer = document.querySelector("#boxes-layer");
  if (!layer) return;
  const now = Date.now();
  for (const [k, b] of V.boxes) if (now - b.at > BOX_TTL_MS) V.boxes.delete(k);
  const pct = (v) => `${(Math.min(1, Math.max(0, v)) * 100).toFixed(2)}%`;
  const items = [];
  for (const { ev } of V.boxes.values()) {
    const [x1, y1, x2, y2] = ev.box;
    const g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "det");
    g.dataset.label = ev.label || "";
    const rect = document.createElementNS(SVG, "rect");
    for (const [k, v] of Object.entries({ x: pct(x1), y: pct(y1), width: pct(x2 - x1), height: pct(y2 - y1) })) {
      rect.setAttribute(k, v);
    }
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", pct(x1));
    text.setAttribute("y", pct(y1));
    text.setAttribute("dy", "-3");
    text.textContent = `${ev.label || ""} ${ev.score != null ? ev.score.toFixed(2) : ""}`.trim();
    g.append(rect, text);
    items.push(g);
  }
  layer.replaceChildren(...items);
  layer.dataset.boxes = String(items.length);
}
