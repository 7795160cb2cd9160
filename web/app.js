// The image2model page: API key, upload, live progress (SSE read with fetch,
// since EventSource cannot send Authorization), 3D preview and downloads.
// No framework, no CDN: everything comes from this server (CSP 'self').

import { Viewer } from "/static/viewer.js";

const API = "/api/v1";
const KEY_STORAGE = "image2model.apiKey";

const $ = (id) => document.getElementById(id);
let viewer = null;

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function setStatus(el, text, kind) {
  el.textContent = text;
  el.className = "status" + (kind ? " " + kind : "");
}

/** fetch with the key; throws an Error carrying the envelope's message. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey()) headers.set("Authorization", "Bearer " + apiKey());
  const resp = await fetch(path.startsWith("/") ? path : API + "/" + path, { ...options, headers });
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try {
      const body = await resp.json();
      if (body && body.error) message = body.error.message + " (" + body.error.code + ")";
    } catch (_) { /* not JSON */ }
    const err = new Error(message);
    err.status = resp.status;
    throw err;
  }
  return resp;
}

async function loadPolicy() {
  const status = $("key-status");
  if (!apiKey()) {
    setStatus(status, "Paste an API key to start.", "");
    return;
  }
  try {
    const policy = await (await api(API + "/upload")).json();
    const select = $("model");
    select.replaceChildren();
    for (const m of policy.models) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = m.name + " — " + m.description;
      opt.selected = m.name === policy.default_model;
      select.append(opt);
    }
    const mib = (policy.max_file_bytes / 1048576).toFixed(1);
    $("policy").textContent = "Up to " + policy.max_files + " files of " + mib + " MiB each.";
    setStatus(status, "Key accepted.", "ok");
    await loadJobs();
  } catch (e) {
    setStatus(status, e.message, "error");
  }
}

async function loadJobs() {
  try {
    const list = await (await api(API + "/jobs?limit=20")).json();
    $("jobs").replaceChildren();
    for (const job of list.jobs) {
      renderJob(job);
      if (job.status === "queued" || job.status === "running") follow(job.job_id);
    }
  } catch (e) {
    setStatus($("upload-status"), e.message, "error");
  }
}

function jobElement(jobId) {
  let el = document.querySelector('[data-job="' + CSS.escape(jobId) + '"]');
  if (!el) {
    el = document.createElement("div");
    el.className = "job";
    el.dataset.job = jobId;
    $("jobs").prepend(el);
  }
  return el;
}

function button(label, onClick, secondary) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (secondary) b.className = "secondary";
  b.addEventListener("click", onClick);
  return b;
}

function renderJob(job) {
  const el = jobElement(job.job_id);
  el.replaceChildren();
  const head = document.createElement("div");
  head.className = "job-head";
  const id = document.createElement("span");
  id.className = "job-id";
  id.textContent = job.job_id;
  const state = document.createElement("span");
  state.textContent = job.status + " · " + job.progress + "% · " + job.model;
  const remove = button(job.status === "queued" || job.status === "running" ? "Cancel" : "Delete", async () => {
    try {
      const resp = await api(API + "/jobs/" + encodeURIComponent(job.job_id), { method: "DELETE" });
      if (resp.status === 204) el.remove();
      else renderJob(await resp.json());
    } catch (e) {
      setStatus($("upload-status"), e.message, "error");
    }
  }, true);
  head.append(id, state, remove);
  el.append(head);
  for (const item of job.items) {
    const row = document.createElement("div");
    row.className = "item";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = item.filename;
    name.title = item.filename;
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = item.progress;
    const actions = document.createElement("span");
    actions.className = "actions";
    if (item.model_url) {
      actions.append(button("View", () => show(item)));
      for (const format of ["glb", "obj", "stl"]) {
        actions.append(button(format.toUpperCase(), () => download(item, format), true));
      }
    } else {
      actions.textContent = item.status;
    }
    row.append(name, bar, actions);
    if (item.error) {
      const err = document.createElement("span");
      err.className = "error-text";
      err.textContent = item.error.message + " (" + item.error.code + ")";
      row.append(err);
    }
    el.append(row);
  }
}

/** Follows a job's Server-Sent Events until the stream closes. */
async function follow(jobId) {
  try {
    const resp = await api(API + "/jobs/" + encodeURIComponent(jobId) + "/events", {
      headers: { Accept: "text/event-stream" },
    });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trimStart())
          .join("\n");
        if (data) renderJob(JSON.parse(data));
      }
    }
  } catch (e) {
    setStatus($("upload-status"), "Lost the progress stream: " + e.message, "error");
  }
}

async function fetchModel(item, format) {
  const url = item.model_url + (format && format !== "glb" ? "?format=" + format : "");
  return (await api(url)).arrayBuffer();
}

/** Downloads through a short-lived signed link (no key in the URL): the
 *  browser streams the file to disk, it is never held in memory here. */
async function download(item, format) {
  try {
    const linkUrl = item.model_url.replace(/\/model$/, "/link") +
      "?format=" + encodeURIComponent(format) + "&expires_in_seconds=300";
    const link = await (await api(linkUrl, { method: "POST" })).json();
    const a = document.createElement("a");
    a.href = link.url;
    a.rel = "noopener";
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) {
    setStatus($("upload-status"), e.message, "error");
  }
}

async function show(item) {
  try {
    const glb = await fetchModel(item, "glb");
    $("viewer-section").classList.remove("hidden");
    $("viewer-title").textContent = "· " + item.filename;
    if (!viewer) viewer = new Viewer($("viewer"));
    viewer.load(glb);
    $("viewer-section").scrollIntoView({ behavior: "smooth" });
  } catch (e) {
    setStatus($("upload-status"), "Preview failed: " + e.message, "error");
  }
}

async function upload(event) {
  event.preventDefault();
  const status = $("upload-status");
  const files = $("files").files;
  if (!apiKey()) return setStatus(status, "Set an API key first.", "error");
  if (!files.length) return setStatus(status, "Choose at least one image.", "error");
  const form = new FormData();
  form.append("model", $("model").value);
  form.append("texture", $("texture").value);
  for (const f of files) form.append("files", f, f.name);
  $("upload-button").disabled = true;
  setStatus(status, "Uploading…", "");
  try {
    const job = await (await api(API + "/upload", {
      method: "POST",
      body: form,
      headers: { "Idempotency-Key": crypto.randomUUID() },
    })).json();
    setStatus(status, "Job " + job.job_id + " queued.", "ok");
    renderJob(job);
    follow(job.job_id);
    $("files").value = "";
  } catch (e) {
    setStatus(status, e.message, "error");
  } finally {
    $("upload-button").disabled = false;
  }
}

function init() {
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    loadPolicy();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    $("jobs").replaceChildren();
    setStatus($("key-status"), "Key forgotten.", "");
  });
  $("upload-form").addEventListener("submit", upload);
  loadPolicy();
}

init();
