// lookalike web page: plain ES module, no build step, no third-party code.
// Talks only to this server's /api (which calls the gateway over gRPC).

const $ = (selector, root = document) => root.querySelector(selector);

const state = {
  namespaces: [],
  collections: [],
  retrievers: [],
  buckets: [],
  queryImage: null,       // Blob of the image to search with (dropped, picked or pasted)
  queryImageUrl: null,    // object URL of its preview
  searchAbort: null,
  uploadFiles: [],        // [{file, path}]
  uploading: false,
};

const KEY_STORAGE = "lookalike.apiKey";
const IMAGE_SUFFIXES = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"];
const BATCH_FILES = 32;
const BATCH_BYTES = 24 * 1024 * 1024;

// ---- API ------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function parseResponse(status, text) {
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (status >= 200 && status < 300) return body;
  const error = body && body.error;
  throw new ApiError(status, error ? error.code : `HTTP_${status}`, error ? error.message : (text || `HTTP ${status}`).slice(0, 500));
}

// the gateway's API key, when it requires one: this tab only (sessionStorage), sent as a Bearer token
function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { authorization: `Bearer ${key}` } : {};
}

// reads are idempotent: when the gateway is restarting or overloaded they get two more tries
const TRANSIENT = new Set(["UNAVAILABLE", "DEADLINE_EXCEEDED", "NETWORK"]);

async function api(path, options = {}) {
  const retries = options.method && options.method !== "GET" ? 0 : 2;
  for (let attempt = 0; ; attempt++) {
    try {
      return await apiOnce(path, options);
    } catch (err) {
      if (attempt >= retries || !TRANSIENT.has(err.code)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 500 * 3 ** attempt));
    }
  }
}

async function apiOnce(path, options = {}) {
  let response;
  try {
    response = await fetch(`/api${path}`, { ...options, headers: { accept: "application/json", ...authHeaders(), ...(options.headers || {}) } });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "NETWORK", `the web server did not answer (${err.message})`);
  }
  return parseResponse(response.status, await response.text());
}

const nsPath = () => `/namespaces/${encodeURIComponent($("#namespace").value)}`;

// ---- errors, plainly ------------------------------------------------------------------------------

const TITLES = {
  INVALID_ARGUMENT: "Rejected",
  FAILED_PRECONDITION: "Not possible here",
  UNAUTHENTICATED: "Unauthorised: sign-in needed",
  PERMISSION_DENIED: "Not allowed",
  NOT_FOUND: "Not found",
  RESOURCE_EXHAUSTED: "Too large",
  UNIMPLEMENTED: "Not available: the gateway does not implement this yet",
  UNAVAILABLE: "The gateway is unavailable",
  DEADLINE_EXCEEDED: "Timed out",
  ALREADY_EXISTS: "Already exists",
  NETWORK: "No answer from the web server",
};

function showError(box, err) {
  if (!(err instanceof ApiError)) err = new ApiError(0, "ERROR", String(err && err.message || err));
  box.replaceChildren();
  const title = document.createElement("strong");
  title.textContent = TITLES[err.code] || "Error";
  const message = document.createElement("span");
  message.className = "error-message";
  message.textContent = err.message;
  const code = document.createElement("small");
  code.className = "error-code";
  code.textContent = ` (${err.code}${err.status ? `, HTTP ${err.status}` : ""})`;
  box.append(title, message, code);
  box.dataset.code = err.code;
  box.hidden = false;
  if (err.code === "UNAUTHENTICATED") {
    const hint = document.createElement("span");
    hint.className = "error-hint";
    hint.textContent = " — enter an API key under “API key” at the top.";
    message.after(hint);
    $("#auth").open = true;
  }
}

function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
  delete box.dataset.code;
}

// ---- URL state ------------------------------------------------------------------------------------

function saveLocation() {
  const params = new URLSearchParams();
  for (const id of ["namespace", "collection", "retriever"]) {
    const value = $(`#${id}`).value;
    if (value) params.set(id, value);
  }
  const tab = document.querySelector('[role=tab][aria-selected=true]');
  if (tab && tab.id !== "tab-search") params.set("view", tab.id.replace("tab-", ""));
  history.replaceState(null, "", `${location.pathname}?${params}`);
}
const wanted = new URLSearchParams(location.search);

// ---- namespace / collection / retriever -----------------------------------------------------------

function fillSelect(select, options, preferred) {
  select.replaceChildren(...options.map(([value, text]) => new Option(text, value)));
  const values = options.map(([value]) => value);
  select.value = values.includes(preferred) ? preferred : (values[0] ?? "");
}

async function loadNamespaces() {
  const select = $("#namespace");
  try {
    state.namespaces = (await api("/namespaces")).namespaces;
  } catch (err) {
    showError($("#global-error"), err);
    return;
  }
  clearError($("#global-error"));
  if (!state.namespaces.length) {
    fillSelect(select, [["", "(none yet)"]]);
    showError($("#global-error"), new ApiError(0, "NOT_FOUND", "There are no namespaces yet: index some images first, e.g. `lookalike index ~/Pictures` or `make demo`."));
    return;
  }
  fillSelect(select, state.namespaces.map((n) => [n.id, n.display_name || n.id]), wanted.get("namespace") || (state.namespaces.find((n) => n.id === "demo") || {}).id);
  await loadNamespace();
}

async function loadNamespace() {
  const box = $("#global-error");
  try {
    const [collections, retrievers, buckets] = await Promise.all([
      api(`${nsPath()}/collections`), api(`${nsPath()}/retrievers`), api(`${nsPath()}/buckets`),
    ]);
    state.collections = collections.collections;
    state.retrievers = retrievers.retrievers;
    state.buckets = buckets.buckets;
    clearError(box);
  } catch (err) {
    showError(box, err);
    state.collections = [];
    state.retrievers = [];
    state.buckets = [];
  }
  const previous = $("#collection").value || wanted.get("collection");
  fillSelect($("#collection"), state.collections.map((c) => [c.id, `${c.display_name || c.id} (${c.image_count} image${c.image_count === 1 ? "" : "s"})`]), previous);
  if (!state.collections.length) fillSelect($("#collection"), [["", "(no collections)"]]);
  // the URL's retriever on the first load; after that the one chosen (a refresh keeps it)
  onCollectionChange(wanted.get("retriever") ?? $("#retriever").value);
  wanted.delete("retriever");
  wanted.delete("collection");
}

function stageSummary(retriever) {
  return retriever.stages.map((s) => {
    if (s.kind === "feature_search") return `feature search ${s.collection}${s.feature_extractor ? `/${s.feature_extractor}` : ""} (${s.limit || 10})`;
    return s.limit ? `${s.kind} (${s.limit})` : s.kind;
  }).join(" → ");
}

function onCollectionChange(preferredRetriever) {
  const collection = $("#collection").value;
  const mine = state.retrievers.filter((r) => r.collections.includes(collection));
  const others = state.retrievers.filter((r) => !r.collections.includes(collection));
  const options = [...mine, ...others].map((r) => [r.id, `${r.display_name || r.id}${r.collections.includes(collection) ? "" : ` (on ${r.collections.join(", ") || "?"})`}`]);
  if (collection) options.push(["", `default: feature search → rerank on ${collection}`]);
  // a retriever asked for (the URL, one just created), else the collection's first, else the default
  const fallback = mine.length ? mine[0].id : "";
  fillSelect($("#retriever"), options, preferredRetriever && options.some(([v]) => v === preferredRetriever) ? preferredRetriever : fallback);
  onRetrieverChange();
  fillBuckets();
}

function onRetrieverChange() {
  const retriever = state.retrievers.find((r) => r.id === $("#retriever").value);
  $("#retriever-help").textContent = retriever ? stageSummary(retriever)
    : ($("#collection").value ? "created on first search, as the CLI does" : "");
  saveLocation();
}

// ---- search ---------------------------------------------------------------------------------------

function setQueryImage(blob, name) {
  if (state.queryImageUrl) URL.revokeObjectURL(state.queryImageUrl);
  state.queryImage = blob;
  state.queryImageUrl = blob ? URL.createObjectURL(blob) : null;
  const preview = $("#query-preview");
  preview.hidden = !blob;
  if (blob) {
    preview.src = state.queryImageUrl;
    preview.alt = `query image ${name}`;
    $("#image-url").value = "";
  } else {
    preview.removeAttribute("src");
  }
  $("#query-name").textContent = blob ? `${name} · ${formatBytes(blob.size)}` : "";
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

async function runSearch() {
  const status = $("#search-status");
  const errorBox = $("#search-error");
  const results = $("#results");
  clearError(errorBox);
  const url = $("#image-url").value.trim();
  const text = $("#query-text").value.trim();
  if (!state.queryImage && !url && !text) {
    showError(errorBox, new ApiError(0, "INVALID_ARGUMENT", "Give an image (drop, paste or choose one), an image URL or some text."));
    return;
  }
  if (!$("#retriever").value && !$("#collection").value) {
    showError(errorBox, new ApiError(0, "INVALID_ARGUMENT", "Choose a collection or a retriever first."));
    return;
  }
  const form = new FormData();
  if ($("#retriever").value) form.set("retriever", $("#retriever").value);
  else form.set("collection", $("#collection").value);
  if (state.queryImage) form.set("image", state.queryImage, $("#query-name").textContent.split(" · ")[0] || "query");
  else if (url) form.set("image_url", url);
  if (text) form.set("text", text);
  if ($("#filter").value.trim()) form.set("filter", $("#filter").value.trim());
  if (Number($("#limit").value) > 0) form.set("limit", String(Math.floor(Number($("#limit").value))));

  state.searchAbort?.abort();
  const abort = state.searchAbort = new AbortController();
  results.setAttribute("aria-busy", "true");
  $("#search-button").disabled = true;
  status.textContent = "Searching…";
  try {
    const body = await api(`${nsPath()}/search`, { method: "POST", body: form, signal: abort.signal });
    renderResults(body);
    const timings = body.stage_timings.map((t) => `${t.stage} ${Math.round(t.milliseconds)} ms`).join(", ");
    status.textContent = body.documents.length
      ? `${body.documents.length} match${body.documents.length === 1 ? "" : "es"} in ${Math.round(body.elapsed_ms)} ms${timings ? ` (${timings})` : ""}.`
      : "No matches.";
    // an absent retriever was just created: show it in the list
    if (!$("#retriever").value) refreshRetrievers(body.retriever.split("/").pop());
  } catch (err) {
    if (err.name === "AbortError") return;
    results.replaceChildren();
    status.textContent = "Search failed.";
    showError(errorBox, err);
  } finally {
    if (state.searchAbort === abort) {
      results.removeAttribute("aria-busy");
      $("#search-button").disabled = false;
    }
  }
}

async function refreshRetrievers(select) {
  try {
    state.retrievers = (await api(`${nsPath()}/retrievers`)).retrievers;
    onCollectionChange(select);
  } catch { /* the search itself worked; the list stays as it was */ }
}

function pct(v) { return `${(Math.min(1, Math.max(0, v)) * 100).toFixed(2)}%`; }

function renderResults(body) {
  const template = $("#result-template");
  const items = body.documents.map((doc, i) => {
    const li = template.content.firstElementChild.cloneNode(true);
    li.dataset.filename = doc.filename;
    li.dataset.rank = String(i + 1);
    if (i === 0) li.classList.add("first");
    const img = $("img", li);
    img.src = doc.preview_url;
    img.alt = doc.filename || doc.content_id;
    img.addEventListener("error", () => { img.alt = `${doc.filename}: preview unavailable`; }, { once: true });
    $(".rank", li).textContent = `#${i + 1}`;
    $(".filename", li).textContent = doc.filename || doc.content_id.slice(0, 12);
    $(".score", li).textContent = `score ${doc.score.toFixed(3)}`;
    const region = [];
    if (doc.box) {
      const b = doc.box;
      const box = document.createElement("div");
      box.className = "box";
      box.setAttribute("aria-hidden", "true");
      box.dataset.box = JSON.stringify(b);
      Object.assign(box.style, { left: pct(b.x_min), top: pct(b.y_min), width: pct(b.x_max - b.x_min), height: pct(b.y_max - b.y_min) });
      $(".thumb", li).append(box);
      region.push(`matched region x ${Math.round(b.x_min * 100)}–${Math.round(b.x_max * 100)}%, y ${Math.round(b.y_min * 100)}–${Math.round(b.y_max * 100)}%`);
    }
    if (doc.inlier_count) region.push(`${doc.inlier_count} keypoint matches`);
    if (doc.duplicate_of) region.push(`near-duplicate of ${doc.duplicate_of.split("/").pop().slice(0, 12)}`);
    if (doc.duplicates.length) region.push(`${doc.duplicates.length} near-duplicate${doc.duplicates.length === 1 ? "" : "s"} folded in`);
    $(".region", li).textContent = region.join(" · ");
    const dl = $(".meta", li);
    for (const [key, value] of Object.entries(doc.metadata)) {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
      dl.append(dt, dd);
    }
    return li;
  });
  $("#results").replaceChildren(...items);
}

function clearSearch() {
  state.searchAbort?.abort();
  setQueryImage(null);
  $("#image-url").value = "";
  $("#query-text").value = "";
  $("#file-input").value = "";
  $("#results").replaceChildren();
  $("#search-status").textContent = "";
  clearError($("#search-error"));
}

function imageFromTransfer(transfer) {
  for (const file of transfer.files || []) if (file.type.startsWith("image/") || !file.type) return file;
  for (const item of transfer.items || []) {
    if (item.kind === "file") { const f = item.getAsFile(); if (f) return f; }
  }
  return null;
}

// ---- duplicates -----------------------------------------------------------------------------------

async function findDuplicates() {
  const status = $("#duplicates-status");
  const errorBox = $("#duplicates-error");
  const list = $("#duplicate-groups");
  clearError(errorBox);
  const collection = $("#collection").value;
  if (!collection) {
    showError(errorBox, new ApiError(0, "INVALID_ARGUMENT", "Choose a collection first."));
    return;
  }
  status.textContent = `Looking for near-duplicates in ${collection}…`;
  list.replaceChildren();
  try {
    const distance = Math.max(0, Math.floor(Number($("#max-distance").value) || 0));
    const body = await api(`${nsPath()}/collections/${encodeURIComponent(collection)}/duplicates?max_hamming_distance=${distance}`);
    list.replaceChildren(...body.groups.map((group, i) => {
      const li = document.createElement("li");
      li.className = "group";
      const head = document.createElement("p");
      head.textContent = `Group ${i + 1}: ${group.objects.length} images, largest distance ${group.max_distance}`;
      const ul = document.createElement("ul");
      group.objects.forEach((object, j) => {
        const item = document.createElement("li");
        item.textContent = `${group.filenames[j] || "(no name)"}${j === 0 ? " (kept as representative)" : ""} — ${object.split("/").pop().slice(0, 12)}`;
        ul.append(item);
      });
      li.append(head, ul);
      return li;
    }));
    status.textContent = body.groups.length
      ? `${body.groups.length} group${body.groups.length === 1 ? "" : "s"} of near-duplicates among ${body.image_count} images.`
      : `No near-duplicates among ${body.image_count} images.`;
  } catch (err) {
    status.textContent = "";
    showError(errorBox, err);
  }
}

// ---- upload ---------------------------------------------------------------------------------------

function fillBuckets() {
  const collection = $("#collection").value;
  const mine = state.buckets.filter((b) => b.collection === collection);
  const options = mine.map((b) => [b.id, `${b.id}${b.auto_process ? "" : " (not indexing)"}`]);
  if (collection) {
    const taken = state.buckets.some((b) => b.id === collection);
    const id = taken ? `${collection}-web`.slice(0, 63) : collection;
    if (!state.buckets.some((b) => b.id === id)) options.push([`new:${id}`, `new bucket “${id}” for ${collection}`]);
  }
  fillSelect($("#bucket"), options.length ? options : [["", "(choose a collection)"]], $("#bucket").value);
  updateUploadButton();
}

function isImageName(name) {
  const lower = name.toLowerCase();
  return IMAGE_SUFFIXES.some((s) => lower.endsWith(s));
}

function setUploadFiles(entries, fromFolder) {
  let skipped = 0;
  state.uploadFiles = entries.filter(({ path }) => {
    const base = path.split("/").pop();
    if (base.startsWith(".")) { skipped++; return false; }
    // from a folder take images and their sidecars only; files picked one by one all go (the gateway judges)
    if (fromFolder && !isImageName(path) && !path.toLowerCase().endsWith(".json")) { skipped++; return false; }
    return true;
  });
  const images = state.uploadFiles.filter(({ path }) => !path.toLowerCase().endsWith(".json"));
  const bytes = state.uploadFiles.reduce((n, { file }) => n + file.size, 0);
  $("#upload-selection").textContent = images.length
    ? `${images.length} image${images.length === 1 ? "" : "s"} chosen (${formatBytes(bytes)})${skipped ? `; ${skipped} other file${skipped === 1 ? "" : "s"} skipped` : ""}.`
    : "No images chosen.";
  updateUploadButton();
}

function updateUploadButton() {
  $("#upload-button").disabled = state.uploading || !state.uploadFiles.length || !$("#bucket").value;
}

async function walkEntry(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push({ file, path: entry.fullPath.replace(/^\/+/, "") });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) await walkEntry(child, out);
    }
  }
}

async function filesFromDrop(transfer) {
  const entries = [...(transfer.items || [])].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return { files: [...transfer.files].map((file) => ({ file, path: file.name })), folder: false };
  const out = [];
  for (const entry of entries) {
    const before = out.length;
    await walkEntry(entry, out);
    // paths relative to a dropped folder, as `lookalike index FOLDER` names them
    if (entry.isDirectory) for (const item of out.slice(before)) item.path = item.path.split("/").slice(1).join("/");
  }
  return { files: out, folder: entries.some((e) => e.isDirectory) };
}

function parseMetadata(text) {
  const out = {};
  for (const pair of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const at = pair.indexOf("=");
    if (at < 1) throw new ApiError(0, "INVALID_ARGUMENT", `metadata: expected key=value, got “${pair}”`);
    const key = pair.slice(0, at).trim();
    const raw = pair.slice(at + 1).trim();
    try { out[key] = JSON.parse(raw); } catch { out[key] = raw; }
  }
  return out;
}

function batches(files) {
  const out = [];
  let current = [];
  let bytes = 0;
  for (const item of files) {
    if (current.length && (current.length >= BATCH_FILES || bytes + item.file.size > BATCH_BYTES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += item.file.size;
  }
  if (current.length) out.push(current);
  return out;
}

function postWithProgress(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api${path}`);
    xhr.setRequestHeader("accept", "application/json");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded));
    xhr.addEventListener("load", () => parseResponse(xhr.status, xhr.responseText).then(resolve, reject));
    xhr.addEventListener("error", () => reject(new ApiError(0, "NETWORK", "the upload was interrupted")));
    xhr.send(form);
  });
}

async function ensureBucket() {
  const value = $("#bucket").value;
  if (!value.startsWith("new:")) return value;
  const id = value.slice(4);
  const bucket = await api(`${nsPath()}/buckets`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ bucket_id: id, collection: $("#collection").value }),
  });
  state.buckets.push(bucket);
  fillBuckets();
  $("#bucket").value = bucket.id;
  return bucket.id;
}

async function runUpload() {
  const errorBox = $("#upload-error");
  const status = $("#upload-status");
  const problems = $("#upload-problems");
  clearError(errorBox);
  problems.replaceChildren();
  const uploadBar = $("#upload-progress");
  const indexBar = $("#index-progress");
  let metadata;
  try {
    metadata = parseMetadata($("#upload-meta").value);
  } catch (err) {
    showError(errorBox, err);
    return;
  }
  state.uploading = true;
  updateUploadButton();
  const files = state.uploadFiles;
  const totalBytes = Math.max(1, files.reduce((n, { file }) => n + file.size, 0));
  uploadBar.max = totalBytes;
  uploadBar.value = 0;
  indexBar.max = 1;
  indexBar.value = 0;
  const jobs = new Map(); // job name → latest job
  let accepted = 0;
  let rejected = 0;
  let sentBytes = 0;
  let uploadsDone = false;
  const addProblem = (text) => { const li = document.createElement("li"); li.textContent = text; problems.append(li); };

  // a finished job that indexed fewer than it accepted skipped images already indexed unchanged
  const unchangedOf = (job) => (job.done ? Math.max(0, job.accepted - job.indexed - job.failed) : 0);
  const showIndexing = () => {
    let indexed = 0;
    let failed = 0;
    let unchanged = 0;
    for (const job of jobs.values()) { indexed += job.indexed; failed += job.failed; unchanged += unchangedOf(job); }
    indexBar.max = Math.max(1, accepted);
    indexBar.value = indexed + failed + unchanged;
    $("#index-progress-text").textContent = `${indexed} of ${accepted} indexed${failed ? `, ${failed} failed` : ""}${unchanged ? `, ${unchanged} already indexed` : ""}`;
  };

  const poll = async () => {
    while (true) {
      const pending = [...jobs.values()].filter((j) => !j.done);
      if (uploadsDone && !pending.length) return;
      await Promise.all(pending.map(async (job) => {
        try {
          jobs.set(job.name, { ...(await api(`${nsPath()}/jobs/${encodeURIComponent(job.id)}`)), accepted: job.accepted });
        } catch (err) {
          showError(errorBox, err);
          jobs.set(job.name, { ...job, done: true });
        }
      }));
      showIndexing();
      await new Promise((r) => setTimeout(r, 400));
    }
  };

  let poller = null;
  try {
    const bucket = await ensureBucket();
    const parts = batches(files);
    status.textContent = `Uploading ${files.length} file${files.length === 1 ? "" : "s"} into ${bucket}…`;
    for (const part of parts) {
      const form = new FormData();
      if (Object.keys(metadata).length) form.set("metadata", JSON.stringify(metadata));
      for (const { file, path } of part) form.append("files", file, path);
      const partBytes = part.reduce((n, { file }) => n + file.size, 0);
      const body = await postWithProgress(`${nsPath()}/buckets/${encodeURIComponent(bucket)}/objects`, form, (loaded) => {
        uploadBar.value = Math.min(totalBytes, sentBytes + Math.min(loaded, partBytes));
        $("#upload-progress-text").textContent = `${formatBytes(uploadBar.value)} of ${formatBytes(totalBytes)}`;
      });
      sentBytes += partBytes;
      uploadBar.value = sentBytes;
      $("#upload-progress-text").textContent = `${formatBytes(sentBytes)} of ${formatBytes(totalBytes)}`;
      accepted += body.accepted_count;
      rejected += body.rejected_count;
      for (const r of body.results) if (r.error) addProblem(`${r.filename}: ${r.error}`);
      if (body.accepted_count) {
        jobs.set(body.job, { name: body.job, id: body.job_id, accepted: body.accepted_count, indexed: 0, failed: 0, done: false, failures: [] });
      }
      showIndexing();
      poller = poller || poll();
    }
    uploadsDone = true;
    status.textContent = `Uploaded: ${accepted} accepted, ${rejected} rejected. Indexing…`;
    if (poller) await poller;
    let indexed = 0;
    let failed = 0;
    let unchanged = 0;
    for (const job of jobs.values()) {
      indexed += job.indexed;
      failed += job.failed;
      unchanged += unchangedOf(job);
      for (const f of job.failures || []) addProblem(`${f.filename}: ${f.reason}`);
    }
    showIndexing();
    status.textContent = `Done: ${indexed} indexed, ${failed} failed, ${rejected} rejected${unchanged ? `, ${unchanged} already indexed (unchanged)` : ""}.`;
    status.dataset.done = "true";
    loadNamespace();
  } catch (err) {
    uploadsDone = true;
    status.textContent = "Upload failed.";
    showError(errorBox, err);
  } finally {
    state.uploading = false;
    updateUploadButton();
  }
}

// ---- tabs -----------------------------------------------------------------------------------------

function selectTab(tab, focus = false) {
  for (const t of document.querySelectorAll("[role=tab]")) {
    const selected = t === tab;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(`#${t.getAttribute("aria-controls")}`).hidden = !selected;
  }
  if (focus) tab.focus();
  saveLocation();
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (e) => {
      const i = tabs.indexOf(tab);
      const next = { ArrowRight: tabs[(i + 1) % tabs.length], ArrowLeft: tabs[(i - 1 + tabs.length) % tabs.length], Home: tabs[0], End: tabs[tabs.length - 1] }[e.key];
      if (next) { e.preventDefault(); selectTab(next, true); }
    });
  }
  const view = wanted.get("view");
  if (view && $(`#tab-${view}`)) selectTab($(`#tab-${view}`));
}

// ---- drag and drop --------------------------------------------------------------------------------

function setUpDropZone(zone, onDrop) {
  let depth = 0;
  zone.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; zone.classList.add("dragging"); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); if (e.dataTransfer) e.dataTransfer.dropEffect = "copy"; });
  zone.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; zone.classList.remove("dragging"); } });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    zone.classList.remove("dragging");
    onDrop(e.dataTransfer);
  });
}

// ---- start ----------------------------------------------------------------------------------------

function showKeyState() {
  const set = Boolean(sessionStorage.getItem(KEY_STORAGE));
  $("#auth-summary").textContent = set ? "API key (in use)" : "API key";
  $("#api-key").value = "";
  $("#api-key").placeholder = set ? "•••••••• (in use)" : "lk_…";
}

function start() {
  setUpTabs();
  showKeyState();
  $("#auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("#api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    showKeyState();
    $("#auth").open = false;
    loadNamespaces();
  });
  $("#api-key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showKeyState();
    loadNamespaces();
  });
  $("#namespace").addEventListener("change", () => { $("#collection").value = ""; loadNamespace(); });
  $("#collection").addEventListener("change", () => onCollectionChange());
  $("#retriever").addEventListener("change", onRetrieverChange);

  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  $("#clear-button").addEventListener("click", clearSearch);
  $("#file-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) { setQueryImage(file, file.name); runSearch(); }
  });
  $("#image-url").addEventListener("input", () => { if ($("#image-url").value) setQueryImage(null); });
  setUpDropZone($("#drop-zone"), (transfer) => {
    const file = imageFromTransfer(transfer);
    if (file) { setQueryImage(file, file.name || "dropped image"); runSearch(); return; }
    const url = (transfer.getData("text/uri-list") || transfer.getData("text/plain") || "").split("\n")[0].trim();
    if (/^https?:\/\//i.test(url)) { setQueryImage(null); $("#image-url").value = url; runSearch(); }
  });
  // pasting an image anywhere on the search view searches with it
  document.addEventListener("paste", (e) => {
    if ($("#panel-search").hidden || !e.clipboardData) return;
    const file = imageFromTransfer(e.clipboardData);
    if (!file) return;
    e.preventDefault();
    setQueryImage(file, file.name && file.name !== "image.png" ? file.name : "pasted image");
    runSearch();
  });

  $("#duplicates-form").addEventListener("submit", (e) => { e.preventDefault(); findDuplicates(); });

  $("#bucket").addEventListener("change", updateUploadButton);
  $("#upload-files").addEventListener("change", (e) => setUploadFiles([...e.target.files].map((file) => ({ file, path: file.name })), false));
  $("#upload-folder").addEventListener("change", (e) => setUploadFiles([...e.target.files].map((file) => ({
    file, path: (file.webkitRelativePath || file.name).split("/").slice(1).join("/") || file.name,
  })), true));
  setUpDropZone($("#upload-drop"), async (transfer) => {
    const { files, folder } = await filesFromDrop(transfer);
    setUploadFiles(files, folder);
  });
  $("#upload-form").addEventListener("submit", (e) => { e.preventDefault(); if (!state.uploading) runUpload(); });

  loadNamespaces();
}

start();
