// The embedfleet search page: plain DOM, no framework, no inline script
// (the Content-Security-Policy forbids it). Every stored string is shown
// with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], token: sessionStorage.getItem("embedfleet-token") || "", blobs: [] };

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

function status(msg, isError) {
  const el = $("status");
  el.textContent = msg;
  el.className = isError ? "error" : "";
}

// api fetches a JSON route; a 401 asks for the token, any other error
// becomes a readable message.
async function api(path, opts = {}) {
  const res = await fetch(path, { ...opts, headers: { ...headers(), ...(opts.headers || {}) } });
  if (res.status === 401) {
    $("token-form").hidden = false;
    $("token").focus();
    throw new Error("This server needs its access token.");
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new Error(body.error || "The server answered " + res.status + ".");
  }
  return body;
}

async function blobURL(path) {
  const res = await fetch(path, { headers: headers() });
  if (!res.ok) {
    throw new Error("image " + res.status);
  }
  const url = URL.createObjectURL(await res.blob());
  state.blobs.push(url);
  return url;
}

function model() { return $("model").value; }

function params(extra) {
  const p = new URLSearchParams({ model: model(), k: $("k").value || "12", ...extra });
  const prefix = $("prefix").value.trim();
  if (prefix) p.set("prefix", prefix);
  return p;
}

async function loadModels() {
  try {
    const body = await api("/v1/models");
    state.models = body.models.filter((m) => m.kind === "image");
    const sel = $("model");
    sel.replaceChildren();
    for (const m of state.models) {
      const o = document.createElement("option");
      o.value = m.name;
      o.textContent = m.name + " (" + m.dim + "-d" + (m.text_model ? ", text" : "") + ")";
      sel.append(o);
    }
    onModel();
    status(state.models.length ? "Ready." : "No image model is served.", !state.models.length);
  } catch (e) {
    status(e.message, true);
  }
}

function onModel() {
  const m = state.models.find((x) => x.name === model());
  $("text-form").hidden = !(m && m.text_model);
}

function clearResults() {
  for (const u of state.blobs) URL.revokeObjectURL(u);
  state.blobs = [];
  $("results").replaceChildren();
}

// copiesAsHits turns a /v1/copies answer into show()'s shape: each match a
// result with its tier and verdict.
function copiesAsHits(body) {
  return {
    model: body.model, took_ms: body.took_ms, copies: true, normalised: body.normalised,
    hits: body.matches.map((m, i) => ({ rank: i + 1, id: m.id, uri: m.uri, cosine: m.cosine, score: m.score, tier: m.tier || "", copy: m.copy })),
  };
}

function show(body, what) {
  clearResults();
  const grid = $("results");
  for (const h of body.hits) {
    const card = document.createElement("article");
    card.className = "result";
    card.dataset.id = h.id;
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    const img = document.createElement("img");
    img.alt = "result " + h.rank;
    thumb.append(img);
    blobURL("/v1/thumbnail?" + new URLSearchParams({ model: body.model, id: h.id, size: "256" }))
      .then((u) => { img.src = u; })
      .catch(() => { img.alt = "no thumbnail"; });
    const meta = document.createElement("div");
    meta.className = "meta";
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = "#" + h.rank + "  cos " + h.cosine.toFixed(4) + "  score " + h.score.toFixed(4);
    const uri = document.createElement("span");
    uri.className = "uri";
    uri.textContent = h.uri;
    meta.append(rank, uri);
    if (body.copies) {
      card.dataset.tier = h.tier;
      const tier = document.createElement("span");
      tier.className = "tier " + (h.copy ? "is-copy" : "not-copy");
      tier.textContent = (h.copy ? "copy" : "not a copy") + (h.tier && !h.copy ? " (" + h.tier + ")" : h.tier === "exact" ? " (same bytes)" : "");
      meta.append(tier);
    }
    const actions = document.createElement("div");
    actions.className = "actions";
    const more = document.createElement("button");
    more.type = "button";
    more.className = "more";
    more.textContent = "More like this";
    more.addEventListener("click", () => search({ id: h.id }, "the result #" + h.rank));
    const open = document.createElement("button");
    open.type = "button";
    open.className = "quiet";
    open.textContent = "Open original";
    open.addEventListener("click", async () => {
      try {
        window.open(await blobURL("/v1/original?" + new URLSearchParams({ model: body.model, id: h.id })), "_blank", "noopener");
      } catch (e) {
        status("The original could not be read: " + e.message, true);
      }
    });
    const copies = document.createElement("button");
    copies.type = "button";
    copies.className = "quiet copies";
    copies.textContent = "Copies of this";
    copies.addEventListener("click", () => findCopies({ id: h.id }, "the result #" + h.rank));
    actions.append(more, copies, open);
    card.append(thumb, meta, actions);
    grid.append(card);
  }
  if (body.copies) {
    const n = body.hits.filter((h) => h.copy).length;
    status(n + " of " + body.hits.length + " candidates are copies of " + what + " (" +
      (body.normalised ? "scores normalised against the background set" : "raw cosines: this model has no background set") +
      ") in " + body.took_ms.toFixed(1) + " ms.", false);
    return;
  }
  status(body.hits.length + " results for " + what + " in " + body.took_ms.toFixed(1) + " ms.", false);
}

async function findCopies(extra, what) {
  status("Looking for copies…", false);
  try {
    show(copiesAsHits(await api("/v1/copies?" + params(extra))), what);
  } catch (e) {
    clearResults();
    status(e.message, true);
  }
}

async function search(extra, what) {
  status("Searching…", false);
  try {
    show(await api("/v1/search?" + params(extra)), what);
  } catch (e) {
    clearResults();
    status(e.message, true);
  }
}

async function searchImage(file) {
  if (!file) return;
  status("Searching…", false);
  try {
    if ($("copies-mode").checked) {
      show(copiesAsHits(await api("/v1/copies?" + params({}), { method: "POST", body: file })), "the image " + file.name);
      return;
    }
    const body = await api("/v1/search?" + params({}), { method: "POST", body: file });
    show(body, "the image " + file.name);
  } catch (e) {
    clearResults();
    status(e.message, true);
  }
}

function init() {
  $("model").addEventListener("change", onModel);
  $("text-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("text").value.trim();
    if (!t) { status("Type what to look for.", true); return; }
    search({ text: t }, "“" + t + "”");
  });
  $("file").addEventListener("change", () => searchImage($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("file").click(); }
  });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    searchImage(ev.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (ev) => {
    const item = [...ev.clipboardData.items].find((i) => i.kind === "file");
    if (item) searchImage(item.getAsFile());
  });
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("token").value;
    sessionStorage.setItem("embedfleet-token", state.token);
    $("token-form").hidden = true;
    loadModels();
  });
  loadModels();
}

document.addEventListener("DOMContentLoaded", init);
