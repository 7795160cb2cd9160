// The image2model page: API key, upload (picker or drag and drop, checked
// here against the server's policy before anything is sent), one live event
// stream for all of the caller's jobs, job cards with cancel and delete, job
// history a page at a time, a textured 3D preview and GLB/OBJ/STL downloads.
//
// Every request counts against the server's rate limits (by default 100 an
// hour per address, and 10 a minute for uploads), so the page is economical:
// - one event stream per page (`GET /api/v1/events`, read with fetch because
//   EventSource cannot send the key), reopened with backoff; nothing polled;
// - each model file is fetched once and kept (a Blob) for both the preview
//   and its download;
// - the upload policy is read once per key, the job list a page at a time.
//
// The key lives in one variable of this module: never in localStorage,
// sessionStorage, a cookie or a URL. No framework and no CDN (CSP 'self').

import { Viewer } from "/static/viewer.js";

const API = "/api/v1";
const PAGE_SIZE = 20;
const $ = (id) => document.getElementById(id);

/** Everything the page knows. */
const state = {
  /** The API key: in memory only. */
  key: "",
  /** Bumped whenever the key changes, so that late answers for the previous
   *  key are dropped. */
  generation: 0,
  /** `GET /api/v1/upload`. */
  policy: null,
  /** job_id → the newest job JSON seen. */
  jobs: new Map(),
  /** Jobs deleted from this page: a late event must not bring them back. */
  deleted: new Set(),
  /** job_id → its card's elements. */
  cards: new Map(),
  /** The cursor of the next (older) page of jobs, if any. */
  cursor: null,
  /** `item_id:format` → Promise<{blob, name}>: each file fetched once. */
  files: new Map(),
  /** `item_id:format` → object URL of that Blob. */
  urls: new Map(),
  /** The event stream's AbortController while it runs. */
  stream: null,
  /** The chosen files: [{file, kind, error}]. */
  selection: [],
  /** The Idempotency-Key of the current selection (kept for a retry). */
  idempotencyKey: null,
  /** The WebGL viewer, made on first use. */
  viewer: null,
  /** Which item is previewed: {jobId, itemId}. */
  viewing: null,
  viewToken: 0,
};

// ---------------------------------------------------------------- requests

/** An API answer other than 2xx, in words. */
class ApiError extends Error {
  constructor(message, status, code, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function seconds(n) {
  if (n < 90) return n + " s";
  return Math.ceil(n / 60) + " min";
}

async function errorOf(resp) {
  let message = "the server answered " + resp.status + " " + resp.statusText;
  let code = null;
  try {
    const body = await resp.json();
    if (body && body.error) {
      message = body.error.message;
      code = body.error.code;
    }
  } catch (_) {
    // Not the JSON envelope: keep the status line.
  }
  const retryAfter = Number.parseInt(resp.headers.get("Retry-After") || "", 10);
  if (resp.status === 429) {
    message = "Too many requests for now (the server's rate limit)" +
      (Number.isFinite(retryAfter) ? ": try again in " + seconds(retryAfter) + "." : ".");
  } else if (resp.status === 401) {
    message = "The server did not accept this API key.";
  }
  return new ApiError(message, resp.status, code, Number.isFinite(retryAfter) ? retryAfter : null);
}

/** fetch with the key in the Authorization header (never in the URL). */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", "Bearer " + state.key);
  let resp;
  try {
    resp = await fetch(path, { ...options, headers, cache: "no-store", credentials: "same-origin" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("Could not reach the server (" + e.message + ").", 0, "network", null);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

function setStatus(el, text, kind) {
  el.textContent = text;
  el.className = "status" + (kind ? " " + kind : "");
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** 32 random hex digits from crypto.getRandomValues, which (unlike
 *  crypto.randomUUID) exists on plain HTTP to a LAN address too. */
function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function mib(bytes) {
  return (bytes / 1048576).toFixed(bytes < 1048576 ? 2 : 1) + " MiB";
}

// ---------------------------------------------------------------- the key

async function useKey(event) {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value.trim();
  if (!key) {
    setStatus($("key-status"), "Paste an API key first.", "error");
    return;
  }
  forget(false);
  state.key = key;
  // The key is now in `state` only; the field is emptied so that it is not
  // left in the form (nor offered to a password manager).
  input.value = "";
  const generation = state.generation;
  setStatus($("key-status"), "Checking the key…", "");
  try {
    const policy = await (await api(API + "/upload")).json();
    if (generation !== state.generation) return;
    state.policy = policy;
    showPolicy(policy);
    setStatus($("key-status"), "Key in use (in this tab's memory only).", "ok");
    $("forget-key").hidden = false;
    $("use-key").textContent = "Change key";
    $("jobs-empty").textContent = "No jobs yet.";
    await loadJobs(null);
  } catch (e) {
    if (generation !== state.generation) return;
    forget(false);
    // Not refused (a network error, a 429): give the key back to the field
    // so that "Use key" tries again without pasting it anew.
    if (e.status !== 401 && e.status !== 403) input.value = key;
    setStatus($("key-status"), e.message, "error");
  }
}

/** Drops the key and everything learnt with it. */
function forget(say = true) {
  state.generation += 1;
  state.key = "";
  state.policy = null;
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.jobs.clear();
  state.deleted.clear();
  state.cards.clear();
  state.cursor = null;
  for (const url of state.urls.values()) URL.revokeObjectURL(url);
  state.urls.clear();
  state.files.clear();
  hideViewer();
  $("jobs").replaceChildren();
  $("older").hidden = true;
  $("forget-key").hidden = true;
  $("use-key").textContent = "Use key";
  $("jobs-empty").hidden = false;
  $("jobs-empty").textContent = "Your jobs appear here once your key is set.";
  setLive("");
  checkSelection();
  if (say) setStatus($("key-status"), "Key forgotten.", "");
}

function showPolicy(policy) {
  const select = $("model");
  select.replaceChildren();
  for (const m of policy.models) {
    const opt = document.createElement("option");
    opt.value = m.name;
    opt.textContent = m.name;
    opt.title = m.description;
    opt.selected = m.name === policy.default_model;
    select.append(opt);
  }
  const names = { "image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP" };
  const types = policy.accepted_types.map((t) => names[t] || t).join(", ");
  $("policy").textContent = types + "; up to " + policy.max_files + " photos of at most " +
    mib(policy.max_file_bytes) + " each.";
  checkSelection();
}

// ---------------------------------------------------------------- choosing files

/** The image types the page can recognise from their first bytes. */
const KINDS = [
  {
    mime: "image/png",
    name: "PNG",
    is: (b) => b.length >= 8 && [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((v, i) => b[i] === v),
  },
  { mime: "image/jpeg", name: "JPEG", is: (b) => b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff },
  {
    mime: "image/webp",
    name: "WebP",
    is: (b) => b.length >= 12 && ascii(b, 0, 4) === "RIFF" && ascii(b, 8, 4) === "WEBP",
  },
];

function ascii(b, at, n) {
  return String.fromCharCode(...b.subarray(at, at + n));
}

/** Width and height from an image's header, or null when not found in the
 *  bytes read (the server checks again anyway). */
function dimensions(mime, b) {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (mime === "image/png" && b.length >= 24 && ascii(b, 12, 4) === "IHDR") {
    return [dv.getUint32(16), dv.getUint32(20)];
  }
  if (mime === "image/webp" && b.length >= 30) {
    const chunk = ascii(b, 12, 4);
    if (chunk === "VP8X") return [1 + (b[24] | (b[25] << 8) | (b[26] << 16)), 1 + (b[27] | (b[28] << 8) | (b[29] << 16))];
    if (chunk === "VP8 ") return [dv.getUint16(26, true) & 0x3fff, dv.getUint16(28, true) & 0x3fff];
    if (chunk === "VP8L") {
      return [1 + (b[21] | ((b[22] & 0x3f) << 8)), 1 + ((b[22] >> 6) | (b[23] << 2) | ((b[24] & 0x0f) << 10))];
    }
  }
  if (mime === "image/jpeg") {
    let at = 2;
    while (at + 9 < b.length && b[at] === 0xff) {
      const marker = b[at + 1];
      if (marker === 0xff) { at += 1; continue; }
      const isFrame = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
      if (isFrame) return [dv.getUint16(at + 7), dv.getUint16(at + 5)];
      if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7)) { at += 2; continue; }
      at += 2 + dv.getUint16(at + 2);
    }
  }
  return null;
}

/** Reads the start of a file and says what it is. */
async function inspect(file) {
  const head = new Uint8Array(await file.slice(0, 262144).arrayBuffer());
  const kind = KINDS.find((k) => k.is(head));
  return { kind, size: kind ? dimensions(kind.mime, head) : null };
}

let chooseToken = 0;

/** Checks the chosen files against the policy; nothing is sent here. */
async function choose(fileList) {
  const token = ++chooseToken;
  const files = Array.from(fileList);
  state.idempotencyKey = null;
  const checked = await Promise.all(files.map(async (file) => {
    try {
      return { file, ...(await inspect(file)) };
    } catch (e) {
      return { file, kind: null, size: null, readError: e.message };
    }
  }));
  if (token !== chooseToken) return; // a newer choice won
  state.selection = checked;
  checkSelection();
}

/** The reason a chosen file cannot be sent, in words, or "". */
function problemOf(entry, policy) {
  const { file, kind, size } = entry;
  if (entry.readError) return "could not be read (" + entry.readError + ")";
  if (file.size === 0) return "is empty";
  const accepted = policy ? policy.accepted_types : KINDS.map((k) => k.mime);
  if (!kind || !accepted.includes(kind.mime)) {
    const names = KINDS.filter((k) => accepted.includes(k.mime)).map((k) => k.name);
    return "is not a " + names.join(", ").replace(/, ([^,]*)$/, " or $1") + " image (judged from its first bytes, not its name)";
  }
  if (policy && file.size > policy.max_file_bytes) {
    return "is " + mib(file.size) + "; the limit is " + mib(policy.max_file_bytes) + " per photo";
  }
  if (policy && size && size[0] * size[1] > policy.max_image_pixels) {
    return "is " + size[0] + " × " + size[1] + " pixels; the limit is " +
      (policy.max_image_pixels / 1e6).toFixed(1) + " megapixels";
  }
  return "";
}

/** Shows the selection with each file's verdict; enables Convert when all
 *  is well. Returns the message that blocks the upload, or "". */
function checkSelection() {
  const list = $("selection");
  list.replaceChildren();
  const policy = state.policy;
  let blocking = "";
  for (const entry of state.selection) {
    const li = document.createElement("li");
    const problem = problemOf(entry, policy);
    li.className = problem ? "bad" : "good";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = entry.file.name;
    const verdict = document.createElement("span");
    verdict.className = "verdict";
    verdict.textContent = problem ||
      (entry.kind.name + ", " + mib(entry.file.size) + (entry.size ? ", " + entry.size[0] + " × " + entry.size[1] : ""));
    li.append(name, verdict);
    list.append(li);
    if (problem && !blocking) blocking = entry.file.name + " " + problem + ".";
  }
  const count = state.selection.length;
  if (policy && count > policy.max_files) {
    blocking = count + " photos chosen; at most " + policy.max_files + " can go in one upload.";
  }
  if (policy && !blocking) {
    const total = state.selection.reduce((sum, e) => sum + e.file.size, 0);
    if (total > policy.max_request_bytes) {
      blocking = "These photos add up to " + mib(total) + "; one upload can carry at most " +
        mib(policy.max_request_bytes) + ".";
    }
  }
  const faceLimit = faceLimitValue();
  if (!blocking && faceLimit === undefined) blocking = "The face limit must be a whole number from 500 to 1,000,000, or empty.";
  $("upload-button").disabled = !state.key || !policy || count === 0 || Boolean(blocking);
  if (blocking) setStatus($("upload-status"), blocking, "error");
  else if (count) setStatus($("upload-status"), count + (count === 1 ? " photo" : " photos") + " ready.", "");
  else setStatus($("upload-status"), state.key ? "" : "Set your API key to upload.", "");
  return blocking;
}

/** The face limit: null when empty, undefined when invalid. */
function faceLimitValue() {
  const text = $("face-limit").value.trim();
  if (!text) return null;
  const n = Number(text);
  return Number.isInteger(n) && n >= 500 && n <= 1000000 ? n : undefined;
}

// ---------------------------------------------------------------- upload

async function upload(event) {
  event.preventDefault();
  const status = $("upload-status");
  if (!state.key || !state.policy) return setStatus(status, "Set your API key first.", "error");
  if (!state.selection.length) return setStatus(status, "Choose at least one photo.", "error");
  const blocking = checkSelection();
  if (blocking) return;
  const form = new FormData();
  form.append("model", $("model").value);
  form.append("texture", $("texture").value);
  const faceLimit = faceLimitValue();
  if (faceLimit) form.append("face_limit", String(faceLimit));
  const sent = state.selection;
  for (const { file } of sent) form.append("files", file, file.name);
  // One key per selection: resending the same photos after a lost answer
  // returns the job created first instead of a second job.
  if (!state.idempotencyKey) state.idempotencyKey = randomKey();
  const generation = state.generation;
  $("upload-button").disabled = true;
  setStatus(status, "Uploading " + state.selection.length + " photo(s)…", "");
  try {
    const job = await (await api(API + "/upload", {
      method: "POST",
      body: form,
      headers: { "Idempotency-Key": state.idempotencyKey },
    })).json();
    if (generation !== state.generation) return;
    if (state.selection === sent) {
      state.selection = [];
      state.idempotencyKey = null;
      $("files").value = "";
    }
    checkSelection();
    const n = job.items.length;
    setStatus(status, "Uploaded " + n + (n === 1 ? " photo" : " photos") + " as job " + job.job_id + ".", "ok");
    upsertJob(job);
  } catch (e) {
    if (generation !== state.generation) return;
    setStatus(status, "Upload failed: " + e.message, "error");
    $("upload-button").disabled = false;
  }
}

// ---------------------------------------------------------------- jobs

const ACTIVE = new Set(["queued", "running"]);
const isActive = (job) => ACTIVE.has(job.status);

const JOB_WORDS = {
  queued: "waiting",
  running: "generating",
  succeeded: "done",
  partial: "partly done",
  failed: "failed",
  cancelled: "cancelled",
};

/** One page of the job history (the newest when `cursor` is null). */
async function loadJobs(cursor) {
  const generation = state.generation;
  const older = $("older");
  older.disabled = true;
  try {
    const query = "?limit=" + PAGE_SIZE + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
    const page = await (await api(API + "/jobs" + query)).json();
    if (generation !== state.generation) return;
    for (const job of page.jobs) upsertJob(job);
    state.cursor = page.next_cursor || null;
    older.hidden = !state.cursor;
    setStatus($("jobs-status"), "", "");
  } catch (e) {
    if (generation !== state.generation) return;
    setStatus($("jobs-status"), "Could not load the jobs: " + e.message, "error");
  } finally {
    older.disabled = false;
    $("jobs-empty").hidden = state.jobs.size > 0;
  }
}

/** Takes in a job's state (from an answer or the event stream), unless it is
 *  older than what the page already shows, and follows it while it runs. */
function upsertJob(job) {
  if (state.deleted.has(job.job_id)) return;
  const known = state.jobs.get(job.job_id);
  if (known && Date.parse(known.updated_at) > Date.parse(job.updated_at)) return;
  state.jobs.set(job.job_id, job);
  renderJob(job);
  $("jobs-empty").hidden = true;
  if (isActive(job)) openStream();
}

function removeJob(jobId) {
  state.deleted.add(jobId);
  const job = state.jobs.get(jobId);
  state.jobs.delete(jobId);
  const card = state.cards.get(jobId);
  if (card) card.el.remove();
  state.cards.delete(jobId);
  if (job) {
    for (const item of job.items) dropFiles(item.item_id);
    if (state.viewing && state.viewing.jobId === jobId) hideViewer();
  }
  $("jobs-empty").hidden = state.jobs.size > 0;
}

function button(label, onClick, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** The card of a job, made once and then updated in place (so that a click
 *  or focus survives the stream's updates). Cards are ordered newest first
 *  by job id (ids sort by creation time). */
function cardOf(job) {
  let card = state.cards.get(job.job_id);
  if (card) return card;
  const root = el("article", "job");
  root.dataset.job = job.job_id;
  const head = el("div", "job-head");
  const title = el("div", "job-title");
  const name = el("strong", "job-name");
  const meta = el("span", "job-meta");
  title.append(name, meta);
  const status = el("span", "job-status");
  const remove = button("Cancel", () => removeClicked(job.job_id), "secondary small");
  head.append(title, status, remove);
  const bar = el("progress", "job-progress");
  bar.max = 100;
  const items = el("ol", "items");
  root.append(head, bar, items);
  card = { el: root, name, meta, status, remove, bar, items, rows: new Map(), confirmTimer: null };
  state.cards.set(job.job_id, card);
  // Insert in order (newest first).
  const list = $("jobs");
  const after = Array.from(list.children).find((c) => c.dataset.job < job.job_id);
  list.insertBefore(root, after || null);
  return card;
}

function renderJob(job) {
  const card = cardOf(job);
  const n = job.items.length;
  card.name.textContent = n ? job.items[0].filename + (n > 1 ? " and " + (n - 1) + " more" : "") : "(no photos)";
  card.name.title = job.items.map((i) => i.filename).join("\n");
  card.meta.textContent = job.model + " · " + new Date(job.created_at).toLocaleString();
  card.el.dataset.status = job.status;
  card.status.textContent = (JOB_WORDS[job.status] || job.status) + (isActive(job) ? " · " + job.progress + " %" : "");
  card.bar.value = job.progress;
  card.bar.setAttribute("aria-label", "job progress " + job.progress + " %");
  card.bar.hidden = !isActive(job);
  if (!card.confirmTimer) card.remove.textContent = isActive(job) ? "Cancel" : "Delete";
  for (const item of job.items) renderItem(job, card, item);
}

const ITEM_WORDS = { queued: "waiting", running: "generating", succeeded: "done", failed: "failed", cancelled: "cancelled" };

function renderItem(job, card, item) {
  let row = card.rows.get(item.item_id);
  if (!row) {
    const li = el("li", "item");
    li.dataset.item = item.item_id;
    const name = el("span", "name", item.filename);
    name.title = item.filename;
    const bar = el("progress");
    bar.max = 100;
    const status = el("span", "item-status");
    const actions = el("span", "actions");
    const error = el("p", "error-text");
    error.hidden = true;
    li.append(name, bar, status, actions, error);
    card.items.append(li);
    row = { li, bar, status, actions, error, hasActions: false };
    card.rows.set(item.item_id, row);
  }
  row.li.dataset.status = item.status;
  row.bar.value = item.progress;
  row.bar.setAttribute("aria-label", item.filename + ": " + item.progress + " %");
  row.bar.hidden = item.status !== "running" && item.status !== "queued";
  row.status.textContent = (ITEM_WORDS[item.status] || item.status) +
    (item.status === "running" ? " " + item.progress + " %" : "");
  if (item.error) {
    row.error.hidden = false;
    row.error.textContent = item.error.message;
    row.error.title = item.error.code;
  } else {
    row.error.hidden = true;
  }
  if (item.model_url && !row.hasActions) {
    row.hasActions = true;
    row.actions.append(
      button("View", () => view(job.job_id, item.item_id), "small view"),
      ...downloadButtons(item),
    );
  }
}

function downloadButtons(item) {
  return [
    ["glb", "GLB", "binary glTF with its texture"],
    ["obj.zip", "OBJ", "OBJ with its material and texture (zip)"],
    ["stl", "STL", "STL (shape only)"],
  ].map(([format, label, title]) => {
    const b = button(label, () => download(item, format, b), "secondary small download");
    b.dataset.format = format;
    b.title = "Download " + title;
    return b;
  });
}

/** Cancel (running) or delete (ended; asks once more first). */
async function removeClicked(jobId) {
  const job = state.jobs.get(jobId);
  const card = state.cards.get(jobId);
  if (!job || !card) return;
  if (!isActive(job) && !card.confirmTimer) {
    card.remove.textContent = "Delete for good?";
    card.remove.classList.add("danger");
    card.confirmTimer = setTimeout(() => {
      card.confirmTimer = null;
      card.remove.classList.remove("danger");
      renderJob(state.jobs.get(jobId) || job);
    }, 4000);
    return;
  }
  clearTimeout(card.confirmTimer);
  card.confirmTimer = null;
  card.remove.classList.remove("danger");
  card.remove.disabled = true;
  const generation = state.generation;
  try {
    const resp = await api(API + "/jobs/" + encodeURIComponent(jobId), { method: "DELETE" });
    if (generation !== state.generation) return;
    if (resp.status === 204) removeJob(jobId);
    else upsertJob(await resp.json());
  } catch (e) {
    if (generation !== state.generation) return;
    if (e.status === 404) removeJob(jobId);
    else setStatus($("jobs-status"), (isActive(job) ? "Cancel" : "Delete") + " failed: " + e.message, "error");
  } finally {
    card.remove.disabled = false;
  }
}

// ---------------------------------------------------------------- the event stream

function setLive(text, kind) {
  const live = $("live");
  live.textContent = text;
  live.className = "live" + (kind ? " " + kind : "");
}

function anyActive() {
  for (const job of state.jobs.values()) if (isActive(job)) return true;
  return false;
}

/** Opens the page's one event stream unless it is open. */
function openStream() {
  if (state.stream || !state.key) return;
  const ctl = new AbortController();
  state.stream = ctl;
  followAll(ctl).finally(() => {
    if (state.stream === ctl) {
      state.stream = null;
      setLive("", "");
    }
  });
}

/** Reads `GET /api/v1/events`: the current state of each of the key's
 *  running jobs, `synced`, then every change of any of its jobs (new ones
 *  too) and `deleted`. The stream stays open; if it is cut while jobs run
 *  it is reopened with backoff. A job the page shows as running that is
 *  not among the states sent before `synced` ended (or went) while the
 *  page was not listening: one page of the job list settles those. */
async function followAll(ctl) {
  let failures = 0;
  while (!ctl.signal.aborted) {
    let retryAfter = null;
    try {
      const resp = await api(API + "/events", {
        headers: { Accept: "text/event-stream" },
        signal: ctl.signal,
      });
      setLive("● live", "on");
      const fresh = new Set();
      await readEvents(resp.body, (type, data) => {
        if (type === "job") {
          const job = JSON.parse(data);
          fresh.add(job.job_id);
          upsertJob(job);
        } else if (type === "deleted") {
          const { job_id: id } = JSON.parse(data);
          if (state.jobs.has(id)) removeJob(id);
        } else if (type === "synced") {
          failures = 0;
          const stale = Array.from(state.jobs.values()).filter((j) => isActive(j) && !fresh.has(j.job_id));
          if (stale.length) settle(stale.map((j) => j.job_id));
        }
      });
    } catch (e) {
      if (ctl.signal.aborted) return;
      if (e.status === 401 || e.status === 403) {
        setStatus($("key-status"), e.message, "error");
        return;
      }
      retryAfter = e.retryAfter;
    }
    if (ctl.signal.aborted || !anyActive()) return; // the next upload opens it again
    failures += 1;
    // About 1 s, 2 s, 4 s … up to a minute, with jitter; the server's
    // Retry-After wins.
    const wait = retryAfter !== null
      ? retryAfter * 1000
      : Math.min(60000, 500 * 2 ** Math.min(failures, 7)) * (0.75 + Math.random() / 2);
    setLive("reconnecting in " + Math.ceil(wait / 1000) + " s…", "off");
    await sleep(wait, ctl.signal);
  }
}

/** The current state of `ids` (jobs whose end a cut stream did not
 *  deliver), from one page of the job list; a job not on it is gone. */
async function settle(ids) {
  const generation = state.generation;
  try {
    const page = await (await api(API + "/jobs?limit=100")).json();
    if (generation !== state.generation) return;
    const listed = new Map(page.jobs.map((j) => [j.job_id, j]));
    for (const id of ids) {
      const job = listed.get(id);
      if (job) upsertJob(job);
      else if (!page.next_cursor || id > page.jobs[page.jobs.length - 1].job_id) removeJob(id);
    }
  } catch (_) {
    // The stream itself reports what matters.
  }
}

/** Parses a Server-Sent Events body, calling `onEvent(type, data)`. */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      let line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length) onEvent(type || "message", data.join("\n"));
        type = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "event") type = text;
      else if (field === "data") data.push(text);
    }
  }
}

// ---------------------------------------------------------------- models: fetched once

function findItem(jobId, itemId) {
  const job = state.jobs.get(jobId);
  return job ? job.items.find((i) => i.item_id === itemId) : null;
}

/** The formats the page offers: GLB as generated, OBJ zipped with its
 *  material (.mtl) and texture so that it stays textured, and STL. */
const EXTENSIONS = { glb: ".glb", "obj.zip": ".zip", stl: ".stl" };

/** The file name from Content-Disposition, else the photo's name with the
 *  format's extension. */
function fileName(resp, item, format) {
  const cd = resp.headers.get("Content-Disposition") || "";
  const star = /filename\*=UTF-8''([^;]+)/i.exec(cd);
  if (star) {
    try {
      return decodeURIComponent(star[1]);
    } catch (_) {
      // fall through
    }
  }
  const plain = /filename="?([^";]+)"?/i.exec(cd);
  if (plain) return plain[1];
  return item.filename.replace(/\.[^.]*$/, "") + EXTENSIONS[format];
}

/** The item's model in `format` as {blob, name}: fetched once, then kept. */
function modelFile(item, format) {
  const key = item.item_id + ":" + format;
  let promise = state.files.get(key);
  if (!promise) {
    const url = format === "glb" ? item.model_url : item.model_url + "?format=" + encodeURIComponent(format);
    const generation = state.generation;
    promise = api(url).then(async (resp) => ({ blob: await resp.blob(), name: fileName(resp, item, format) }));
    state.files.set(key, promise);
    promise.catch(() => {
      if (generation === state.generation && state.files.get(key) === promise) state.files.delete(key);
    });
  }
  return promise;
}

function dropFiles(itemId) {
  for (const format of Object.keys(EXTENSIONS)) {
    const key = itemId + ":" + format;
    state.files.delete(key);
    const url = state.urls.get(key);
    if (url) URL.revokeObjectURL(url);
    state.urls.delete(key);
  }
}

async function download(item, format, btn) {
  const generation = state.generation;
  if (btn) btn.disabled = true;
  try {
    const { blob, name } = await modelFile(item, format);
    if (generation !== state.generation) return;
    const key = item.item_id + ":" + format;
    let url = state.urls.get(key);
    if (!url) {
      url = URL.createObjectURL(blob);
      state.urls.set(key, url);
    }
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) {
    if (generation !== state.generation) return;
    setStatus($("jobs-status"), "Download of " + item.filename + " (" + format.toUpperCase() + ") failed: " + e.message, "error");
  } finally {
    if (btn) btn.disabled = false;
  }
}

// ---------------------------------------------------------------- preview

function viewerMessage(text, kind) {
  const msg = $("viewer-message");
  msg.hidden = !text;
  msg.textContent = text || "";
  msg.className = "viewer-message" + (kind ? " " + kind : "");
}

function hideViewer() {
  state.viewToken += 1;
  state.viewing = null;
  if (state.viewer) {
    state.viewer.dispose();
    state.viewer = null;
  }
  $("viewer-section").hidden = true;
  for (const li of document.querySelectorAll(".item.viewing")) li.classList.remove("viewing");
}

async function view(jobId, itemId) {
  const item = findItem(jobId, itemId);
  if (!item) return;
  const token = ++state.viewToken;
  state.viewing = { jobId, itemId };
  for (const li of document.querySelectorAll(".item.viewing")) li.classList.remove("viewing");
  const row = state.cards.get(jobId)?.rows.get(itemId);
  if (row) row.li.classList.add("viewing");
  $("viewer-section").hidden = false;
  $("viewer-title").textContent = "· " + item.filename;
  $("viewer-downloads").replaceChildren(...downloadButtons(item));
  viewerMessage("Loading the model…", "");
  try {
    if (!state.viewer) state.viewer = new Viewer($("viewer"));
    const { blob } = await modelFile(item, "glb");
    if (token !== state.viewToken) return;
    // A fresh ArrayBuffer from the kept Blob: no second request.
    await state.viewer.load(await blob.arrayBuffer());
    if (token !== state.viewToken) return;
    viewerMessage("", "");
  } catch (e) {
    // An AbortError is a load overtaken by a newer one: not news.
    if (token !== state.viewToken || e.name === "AbortError") return;
    // The viewer's messages are sentences for a person.
    viewerMessage(e.message, "error");
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", () => forget(true));
  $("upload-form").addEventListener("submit", upload);
  $("files").addEventListener("change", (e) => choose(e.target.files));
  $("face-limit").addEventListener("input", checkSelection);
  $("older").addEventListener("click", () => loadJobs(state.cursor));
  $("viewer-reset").addEventListener("click", () => state.viewer && state.viewer.reset());

  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "dragend"]) zone.addEventListener(type, () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) choose(e.dataTransfer.files);
  });
  // A photo dropped beside the zone must not make the browser leave the
  // page (and the key with it).
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  checkSelection();
}

init();
