// The Switchyard admin console: served at /admin by src/routes/admin_console.rs, no framework.
//
// Sign in with a token (kept in this tab's sessionStorage, sent as `Authorization: Bearer` and, for
// the WebSocket only, as the `access_token` query parameter, since browsers cannot set headers on
// WebSockets). Then, every second, read the tenants (`GET /api/v1/admin/tenants`) and the selected
// tenant (`GET /api/v1/admin/tenants/{t}`); every other second the actors (`GET /api/v1/admin/actors`)
// and the node's recent samples for the charts (`GET /api/v1/admin/samples`), both Operator only.
// The selected tenant's `tenant:{t}:activity` channel streams into the live tail; the socket says it
// is the console's (`client=console`), so the server does not count it as the tenant's activity.
// Charts are inline SVG drawn here (no chart library: the page loads nothing but its own files).
//
// Everything from the server is rendered with textContent: no data ever becomes markup.
"use strict";

const TOKEN_KEY = "switchyard.adminToken";
const REFRESH_MS = 1000;
/** Actors are read every this many refreshes. */
const ACTORS_EVERY = 2;
/** Entries kept in the live tail. */
const ACTIVITY_KEEP = 200;
/** The server closes silent connections; a ping every 10 s keeps the tail open. */
const PING_MS = 10000;
const RECONNECT_MAX_MS = 10000;
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART_W = 360;
const CHART_H = 110;
/** Line colours for the per-kind charts, in the API's kind order. */
const KIND_COLOURS = ["#2454c5", "#c54b24", "#067647", "#8a3ffc", "#b58105", "#0e7c86", "#9f1853"];

const $ = (selector) => document.querySelector(selector);

const state = {
  token: null,
  claims: {},
  /** Bumped on every sign-in and sign-out, so a loop or socket of an earlier sign-in stops. */
  generation: 0,
  timer: null,
  tick: 0,
  selected: null,
  actorsAllowed: true,
  /** Bumped by every saved actor change: a read started before it must not overwrite the form. */
  actorsVersion: 0,
  ws: null,
  wsChannel: null,
  wsNextId: 0,
  wsBackoff: 500,
  wsPing: null,
  recentSignature: "",
};

// ---------------------------------------------------------------------------------------------
// Small helpers

/** Creates an element; string children become text nodes (never markup). */
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "class") e.className = value;
    else if (key.startsWith("data-")) e.setAttribute(key, String(value));
    else e[key] = value;
  }
  e.append(...children.map((c) => (c instanceof Node ? c : String(c))));
  return e;
}

function show(node, visible) {
  node.hidden = !visible;
}

function fmt(value) {
  return value === null || value === undefined ? "–" : String(value);
}

function fmtRate(value) {
  return typeof value === "number" ? value.toFixed(2) : "–";
}

/** `HH:MM:SS` (UTC, like the server's logs) of an RFC 3339 timestamp; the raw text if unreadable. */
function fmtTime(timestamp) {
  const d = new Date(timestamp);
  return Number.isNaN(d.getTime()) ? fmt(timestamp) : d.toISOString().slice(11, 19);
}

/** The token's claims, for display only (the server verifies; this never decides anything). */
function decodeClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** One call to the admin API; resolves to the JSON body or throws an ApiError (problem JSON). */
async function api(method, path, body) {
  const init = {
    method,
    cache: "no-store",
    headers: { authorization: `Bearer ${state.token}`, accept: "application/json" },
  };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { detail: `cannot reach the server (${e.message})` });
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: reported below as the body's start.
  }
  if (!res.ok) {
    const problem = json && typeof json === "object" ? json : { detail: text.slice(0, 200) || res.statusText };
    throw new ApiError(res.status, problem);
  }
  return json;
}

/** Handles an error every view shares (an expired token signs out); returns its message. */
function handleCommonError(e) {
  if (e instanceof ApiError && e.status === 401) {
    signOut(`Signed out: ${e.message}`);
  }
  return e.message;
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

async function signIn(token) {
  const generation = ++state.generation;
  state.token = token;
  $("#login-error").textContent = "";
  try {
    await api("GET", "/api/v1/admin/tenants");
  } catch (e) {
    if (generation !== state.generation) return;
    state.token = null;
    // An unreachable server is no reason to forget the token; a refusal is.
    if (e.status !== 0) sessionStorage.removeItem(TOKEN_KEY);
    const why =
      e.status === 401 ? `Token refused: ${e.message}`
      : e.status === 403 ? `This token may not use the admin console: ${e.message}`
      : e.status ? `${e.message} (HTTP ${e.status})`
      : e.message;
    $("#login-error").textContent = why;
    return;
  }
  if (generation !== state.generation) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  state.claims = decodeClaims(token);
  const c = state.claims;
  $("#whoami").textContent = [
    `${fmt(c.sub)} · ${fmt(c.role)}`,
    c.tenantKey ? ` of ${c.tenantKey}` : "",
    typeof c.exp === "number" ? ` · token expires ${new Date(c.exp * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC` : "",
  ].join("");
  $("#token").value = "";
  show($("#login-panel"), false);
  show($("#console"), true);
  show($("#logout"), true);
  // A tenant's own admin has one tenant to look at: open it.
  if (c.tenantKey && c.role !== "Operator") select(String(c.tenantKey));
  loop(generation);
}

function signOut(message = "") {
  state.generation++;
  clearTimeout(state.timer);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.claims = {};
  state.selected = null;
  state.tick = 0;
  state.actorsAllowed = true;
  state.recentSignature = "";
  closeActivity();
  for (const id of ["#tenants", "#users", "#channels", "#actors"]) $(`${id} tbody`).replaceChildren();
  $("#recent-events").replaceChildren();
  $("#activity").replaceChildren();
  for (const id of ["#tenants-error", "#tenant-error", "#actors-error", "#charts-error", "#status", "#whoami"]) $(id).textContent = "";
  show($("#tenant-panel"), false);
  show($("#charts-panel"), false);
  show($("#quota-form"), false);
  show($("#actors"), true);
  show($("#actors-denied"), false);
  show($("#console"), false);
  show($("#logout"), false);
  show($("#login-panel"), true);
  $("#login-error").textContent = message;
  $("#token").focus();
}

// ---------------------------------------------------------------------------------------------
// The refresh loop: one request of each kind at a time, the next one a second after the last.

async function loop(generation) {
  if (generation !== state.generation) return;
  const jobs = [refreshTenants()];
  if (state.selected) jobs.push(refreshTenant());
  await Promise.all(jobs);
  // After the tenant reads, not beside them: those ask the tenant groups, whose mailboxes the
  // actor table would otherwise show holding the page's own requests.
  if (state.actorsAllowed && state.tick % ACTORS_EVERY === 0) {
    await Promise.all([refreshActors(), refreshSamples()]);
  }
  state.tick++;
  if (generation !== state.generation) return;
  $("#status").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  state.timer = setTimeout(() => loop(generation), REFRESH_MS);
}

// ---------------------------------------------------------------------------------------------
// Tenants

async function refreshTenants() {
  const generation = state.generation;
  try {
    const body = await api("GET", "/api/v1/admin/tenants");
    if (generation !== state.generation) return;
    renderTenants(Array.isArray(body?.tenants) ? body.tenants : []);
    $("#tenants-error").textContent = "";
  } catch (e) {
    if (generation === state.generation) $("#tenants-error").textContent = handleCommonError(e);
  }
}

function renderTenants(tenants) {
  const tbody = $("#tenants tbody");
  const rows = new Map([...tbody.rows].map((r) => [r.dataset.tenant, r]));
  const sorted = [...tenants].sort((a, b) => String(a.tenantKey).localeCompare(String(b.tenantKey)));
  for (const t of sorted) {
    const key = String(t.tenantKey);
    let row = rows.get(key);
    if (row) {
      rows.delete(key);
    } else {
      row = el("tr", { "data-tenant": key, tabIndex: 0, title: `Show tenant ${key}` },
        el("td", { class: "key" }, key),
        el("td", { class: "connections num" }),
        el("td", { class: "users num" }));
      row.addEventListener("click", () => select(key));
      row.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          select(key);
        }
      });
    }
    row.querySelector(".connections").textContent = fmt(t.connections);
    row.querySelector(".users").textContent = fmt(t.users);
    row.classList.toggle("selected", key === state.selected);
    tbody.append(row); // moves an existing row into sorted order
  }
  for (const gone of rows.values()) gone.remove();
  show($("#tenants-empty"), tenants.length === 0);
}

function select(key) {
  if (state.selected === key) return;
  state.selected = key;
  state.recentSignature = "";
  for (const row of $("#tenants tbody").rows) row.classList.toggle("selected", row.dataset.tenant === key);
  $("#tenant-name").textContent = key;
  for (const id of ["#tenant-connections", "#rate-published", "#rate-delivered", "#tenant-quotas"]) $(id).textContent = "–";
  $("#users tbody").replaceChildren();
  $("#channels tbody").replaceChildren();
  $("#recent-events").replaceChildren();
  $("#activity").replaceChildren();
  $("#tenant-error").textContent = "";
  const form = $("#quota-form");
  delete form.dataset.dirty;
  form.entry = null;
  setFormMessage(form, "", "");
  show(form, state.claims.role === "Operator");
  show($("#tenant-panel"), true);
  refreshTenant();
  if (state.ws) subscribeActivity();
  else openActivity();
}

async function refreshTenant() {
  const key = state.selected;
  const generation = state.generation;
  try {
    const t = await api("GET", `/api/v1/admin/tenants/${encodeURIComponent(key)}`);
    if (generation !== state.generation || key !== state.selected) return;
    renderTenant(t ?? {});
    $("#tenant-error").textContent = "";
  } catch (e) {
    if (generation === state.generation && key === state.selected) $("#tenant-error").textContent = handleCommonError(e);
  }
}

function renderTenant(t) {
  $("#tenant-connections").textContent = fmt(t.connections);
  $("#rate-published").textContent = fmtRate(t.rates?.publishedPerSecond);
  $("#rate-delivered").textContent = fmtRate(t.rates?.deliveredPerSecond);
  const q = t.quotas;
  $("#tenant-quotas").textContent = q
    ? `${fmt(q.maxConnections)} connections · ${fmt(q.publishesPerSecond)} publishes/s · ` +
      `${fmt(q.maxSubscriptionsPerConnection)} subscriptions/connection` +
      (t.quotasOverridden ? " (this tenant's own)" : " (the defaults)")
    : "–";
  if (q) fillQuotaForm(q, t.quotasOverridden, false);

  const users = Array.isArray(t.users) ? t.users : [];
  $("#users tbody").replaceChildren(...users.map((u) =>
    el("tr", { "data-user": String(u.userId) },
      el("td", { class: "user" }, fmt(u.userId)),
      el("td", { class: "role" }, fmt(u.role)),
      el("td", { class: "connections num" }, fmt(u.connections)))));

  const channels = Array.isArray(t.channels) ? t.channels : [];
  $("#channels tbody").replaceChildren(...channels.map((c) =>
    el("tr", { "data-channel": String(c.channel) },
      el("td", { class: "channel" }, fmt(c.channel)),
      el("td", { class: "subscribers num" }, fmt(c.subscribers)))));

  // Newest first, as the API sends them; rebuilt only when the list changed.
  const events = Array.isArray(t.recentEvents) ? t.recentEvents : [];
  const signature = events.map((e) => e.id).join(",");
  if (signature !== state.recentSignature) {
    state.recentSignature = signature;
    $("#recent-events").replaceChildren(...events.map((e) =>
      el("li", { "data-event-id": String(e.id), title: fmt(e.timestamp) },
        el("span", { class: "time" }, fmtTime(e.timestamp)),
        el("span", { class: "event" }, fmt(e.event)),
        el("span", { class: "channel" }, fmt(e.channel)),
        el("span", { class: "detail" }, `#${fmt(e.offset)}`))));
  }
}

// ---------------------------------------------------------------------------------------------
// The live activity tail: one WebSocket, subscribed to the selected tenant's activity channel.

function openActivity() {
  if (!state.token || state.ws) return;
  const generation = state.generation;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws?client=console&access_token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  state.wsChannel = null;
  setActivityState("connecting", "connecting…");
  ws.addEventListener("open", () => {
    if (state.ws !== ws) return;
    state.wsBackoff = 500;
    state.wsPing = setInterval(() => send(ws, { type: "ping" }), PING_MS);
    subscribeActivity();
  });
  ws.addEventListener("message", (m) => {
    if (state.ws !== ws) return;
    let frame;
    try {
      frame = JSON.parse(m.data);
    } catch {
      return;
    }
    onFrame(frame);
  });
  ws.addEventListener("close", (ev) => {
    if (state.ws !== ws) return;
    clearInterval(state.wsPing);
    state.ws = null;
    state.wsChannel = null;
    if (generation !== state.generation || !state.token) return;
    const why = ev.reason ? `${ev.code} ${ev.reason}` : `${ev.code}`;
    setActivityState("disconnected", `disconnected (${why}); reconnecting…`);
    setTimeout(() => {
      if (generation === state.generation) openActivity();
    }, state.wsBackoff);
    state.wsBackoff = Math.min(state.wsBackoff * 2, RECONNECT_MAX_MS);
  });
}

function closeActivity() {
  const ws = state.ws;
  state.ws = null;
  state.wsChannel = null;
  clearInterval(state.wsPing);
  if (ws) ws.close(1000);
  setActivityState("", "");
}

function send(ws, frame) {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
}

/** Moves the socket's one subscription to the selected tenant's activity channel. */
function subscribeActivity() {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const want = state.selected ? `tenant:${state.selected}:activity` : null;
  if (state.wsChannel === want) return;
  if (state.wsChannel) send(ws, { type: "unsubscribe", data: { channel: state.wsChannel } });
  state.wsChannel = want;
  if (want) {
    send(ws, { type: "subscribe", id: ++state.wsNextId, data: { channel: want } });
    setActivityState("subscribing", "subscribing…");
  }
}

function setActivityState(name, text) {
  const node = $("#activity-state");
  node.dataset.state = name;
  node.textContent = text ? `(${text})` : "";
}

function onFrame(frame) {
  const data = frame?.data ?? {};
  switch (frame?.type) {
    case "subscribed":
      if (data.channel === state.wsChannel) setActivityState("live", "live");
      break;
    case "subscription_error":
      if (data.channel === state.wsChannel) {
        setActivityState("refused", `refused: ${fmt(data.reason)} (${fmt(data.code)})`);
      }
      break;
    case "notification":
      if (data.channel === state.wsChannel) addActivity(data);
      break;
    case "error":
      addActivity({ event: "error", data: { message: `${fmt(data.code)}: ${fmt(data.message)}` } });
      break;
    default:
      break; // pong, unsubscribed, presence on auto-joined channels
  }
}

/** One line of the tail for an activity event. */
function summarize(event, d) {
  d = d && typeof d === "object" ? d : {};
  switch (event) {
    case "ConnectionOpened":
    case "ConnectionClosed":
      return `${fmt(d.userId)} (${fmt(d.role)}) via ${fmt(d.protocol)}`;
    case "Subscribed":
    case "Unsubscribed":
      return `${fmt(d.userId)} → ${fmt(d.channel)}`;
    case "Published":
      return `${fmt(d.event)} on ${fmt(d.channel)} #${fmt(d.offset)}`;
    case "ActivitySuppressed":
      return `${fmt(d.suppressed)} summaries dropped by the rate limit`;
    case "error":
      return fmt(d.message);
    default:
      return JSON.stringify(d);
  }
}

function addActivity(n) {
  const d = n.data && typeof n.data === "object" ? n.data : {};
  const li = el("li", {
    "data-event": fmt(n.event),
    "data-published-id": n.event === "Published" ? fmt(d.id) : undefined,
    title: n.timestamp ? fmt(n.timestamp) : undefined,
  },
  el("span", { class: "time" }, n.timestamp ? fmtTime(n.timestamp) : fmtTime(new Date().toISOString())),
  el("span", { class: "event" }, fmt(n.event)),
  el("span", { class: "detail" }, summarize(n.event, d)));
  const list = $("#activity");
  list.prepend(li);
  while (list.childElementCount > ACTIVITY_KEEP) list.lastElementChild.remove();
}

// ---------------------------------------------------------------------------------------------
// Actors: a table with one edit form per kind.

async function refreshActors() {
  const generation = state.generation;
  const version = state.actorsVersion;
  try {
    const body = await api("GET", "/api/v1/admin/actors");
    if (generation !== state.generation || version !== state.actorsVersion) return;
    renderActors(Array.isArray(body?.actors) ? body.actors : []);
    $("#actors-error").textContent = "";
  } catch (e) {
    if (generation !== state.generation) return;
    if (e.status === 403) {
      // Not an Operator: the figures are not for this token; stop asking.
      state.actorsAllowed = false;
      show($("#actors"), false);
      show($("#actors-denied"), true);
      $("#actors-error").textContent = "";
    } else {
      $("#actors-error").textContent = handleCommonError(e);
    }
  }
}

function renderActors(actors) {
  // The charts leave these kinds out: nothing of theirs runs on this node.
  state.notRunning = new Set(actors.filter((a) => a.running === false).map((a) => String(a.kind)));
  const tbody = $("#actors tbody");
  const rows = new Map([...tbody.rows].map((r) => [r.dataset.kind, r]));
  for (const a of actors) {
    const kind = String(a.kind);
    let row = rows.get(kind);
    if (row) rows.delete(kind);
    else row = actorRow(kind);
    updateActorRow(row, a, false);
    tbody.append(row);
  }
  for (const gone of rows.values()) gone.remove();
  const persisted = actors.length > 0 && actors[0].persisted;
  $("#actors-persist").textContent = persistText(persisted);
}

/** Where a change is kept, as the server says (`persisted`, from `[admin] persist`). */
function persistText(persisted) {
  return persisted
    ? "Changes are stored in the database (tables actor_limits and tenant_quotas): they survive a restart and reach every node sharing the database."
    : "Changes apply to this node only and are lost on restart ([admin] persist = false).";
}

const LIMIT_FIELDS = ["mailbox", "policy", "maxQueuedBytes"];

function actorRow(kind) {
  const formId = `actor-form-${kind}`;
  const input = (name, min) =>
    el("input", { name, type: "number", min, step: 1, inputMode: "numeric" });
  const policy = el("select", { name: "policy" },
    el("option", { value: "disconnect" }, "disconnect"),
    el("option", { value: "drop" }, "drop"));
  const mailbox = input("mailbox", 1);
  const maxQueued = input("maxQueuedBytes", 1024);
  // The inputs sit in other cells than the form; the `form` attribute ties them to it.
  for (const field of [mailbox, policy, maxQueued]) field.setAttribute("form", formId);
  const reset = el("button", { type: "button", class: "reset", title: "Back to the configured limits" }, "Reset to default");
  const form = el("form", { id: formId, noValidate: true },
    el("button", { type: "submit", class: "save" }, "Save"), " ", reset);
  const cell = (field) => el("td", { class: `limit ${field.name}` }, field, el("span", { class: "unused muted", hidden: true }, "not used"));
  const row = el("tr", { "data-kind": kind },
    el("td", { class: "kind" }, el("span", { class: "name" }, kind), el("span", { class: "mode muted" }), el("div", { class: "default muted" })),
    el("td", { class: "count num" }),
    cell(mailbox),
    cell(policy),
    cell(maxQueued),
    el("td", { class: "queue num" }),
    el("td", { class: "rate num" }),
    el("td", { class: "time num" }),
    el("td", { class: "full num" }),
    el("td", { class: "dropped num" }),
    el("td", { class: "slow num" }),
    el("td", { class: "actions" }, form, " ", el("span", { class: "message", role: "status" })));
  const edited = () => {
    row.dataset.dirty = "1";
    setMessage(row, "", "");
  };
  for (const field of [mailbox, policy, maxQueued]) {
    field.addEventListener("input", edited);
    field.addEventListener("change", edited);
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    save(row, kind);
  });
  reset.addEventListener("click", () => resetKind(row, kind));
  return row;
}

/** Shows the server's figures; the inputs only when the row holds no unsaved edit (or `force`). */
function updateActorRow(row, a, force) {
  row.entry = a;
  const uses = Array.isArray(a.uses) ? a.uses : ["mailbox"];
  row.classList.toggle("not-running", a.running === false);
  row.querySelector(".mode").textContent = a.running === false ? " — not running in this mode" : "";
  row.querySelector(".default").textContent = defaultText(a);
  row.querySelector(".count").textContent = fmt(a.count);
  row.querySelector(".queue").replaceChildren(...queueCell(a));
  row.querySelector(".rate").textContent = fmtRate(a.handledPerSecond);
  row.querySelector(".time").textContent = typeof a.meanHandleMillis === "number" ? a.meanHandleMillis.toFixed(3) : "–";
  row.querySelector(".full").textContent = fmt(a.mailboxFull);
  row.querySelector(".dropped").textContent = fmt(a.dropped);
  row.querySelector(".slow").textContent = fmt(a.slowConsumerDisconnects);
  row.querySelector("button.reset").disabled = !a.overridden;
  // A kind that does not run here has nothing to tune.
  row.querySelector("td.actions form").hidden = a.running === false;
  // Only the limits this kind acts on can be edited; the others say so.
  for (const name of LIMIT_FIELDS) {
    const used = uses.includes(name) && a.running !== false;
    const field = row.querySelector(`[name=${name}]`);
    field.hidden = !used;
    field.disabled = !used;
    row.querySelector(`td.${name} .unused`).hidden = used || a.running === false;
  }
  if (row.dataset.dirty && !force) return;
  delete row.dataset.dirty;
  for (const name of LIMIT_FIELDS) {
    const field = row.querySelector(`[name=${name}]`);
    if (field.disabled) {
      field.value = "";
      continue;
    }
    if (document.activeElement !== field || force) field.value = String(a[name]);
  }
}

/** "default" or what the configured limits are, when this kind's were changed. */
function defaultText(a) {
  const d = a.defaults;
  if (!d) return "";
  if (!a.overridden) return "configured limits";
  const parts = [`mailbox ${fmt(d.mailbox)}`];
  if (d.policy !== undefined) parts.push(`policy ${d.policy}`);
  if (d.maxQueuedBytes !== undefined) parts.push(fmtBytes(d.maxQueuedBytes));
  return `changed; default ${parts.join(", ")}`;
}

/** Queue depth now (peak); sessions add their peak of queued bytes; broker shards one line each. */
function queueCell(a) {
  const out = [`${fmt(a.queueDepth)} (${fmt(a.peakQueueDepth)})`];
  if (typeof a.peakQueuedBytes === "number") out.push(el("div", { class: "muted bytes" }, `peak ${fmtBytes(a.peakQueuedBytes)} queued`));
  if (Array.isArray(a.instances) && a.instances.length > 1) {
    out.push(el("details", { class: "instances" },
      el("summary", {}, `${a.instances.length} shards`),
      ...a.instances.map((i) => el("div", { "data-instance": String(i.instance) },
        `#${fmt(i.instance)}: ${fmt(i.queueDepth)} (${fmt(i.peakQueueDepth)}), full ${fmt(i.mailboxFull)}`))));
  }
  return out;
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

function setMessage(row, kind, text) {
  setFormMessage(row, kind, text);
}

function setFormMessage(container, kind, text) {
  const message = container.querySelector(".message");
  message.className = kind ? `message ${kind}` : "message";
  message.textContent = text;
}

/** A whole number typed into `name`, or an Error saying what is wrong with it. */
function wholeNumber(name, text) {
  const t = text.trim();
  if (!/^-?\d+$/.test(t)) throw new Error(`${name} must be a whole number`);
  return Number(t);
}

/** What a saved change means: where it is kept. */
function savedText(what, persisted) {
  return persisted
    ? `${what}; stored in the database, kept across restarts`
    : `${what} on this node only; lost on restart`;
}

/** Sends the fields that differ from the server's last answer; shows "saved" or the reason. */
async function save(row, kind) {
  const last = row.entry ?? {};
  const patch = {};
  try {
    for (const name of ["mailbox", "maxQueuedBytes"]) {
      const field = row.querySelector(`[name=${name}]`);
      if (field.disabled) continue;
      if (field.value.trim() !== String(last[name])) patch[name] = wholeNumber(name, field.value);
    }
  } catch (e) {
    setMessage(row, "error", e.message);
    return;
  }
  const policy = row.querySelector("[name=policy]");
  if (!policy.disabled && policy.value !== last.policy) patch.policy = policy.value;
  if (Object.keys(patch).length === 0) {
    setMessage(row, "", "nothing changed");
    return;
  }
  await actorRequest(row, "PUT", kind, patch, (entry) => savedText("saved", entry.persisted));
}

/** Returns a kind to its configured limits. */
async function resetKind(row, kind) {
  await actorRequest(row, "DELETE", kind, undefined, (entry) =>
    entry.persisted ? "reset to default; the stored change is removed" : "reset to default on this node");
}

async function actorRequest(row, method, kind, body, done) {
  const buttons = row.querySelectorAll("button");
  for (const b of buttons) b.disabled = true;
  setMessage(row, "pending", method === "DELETE" ? "resetting…" : "saving…");
  const generation = state.generation;
  try {
    const entry = await api(method, `/api/v1/admin/actors/${encodeURIComponent(kind)}`, body);
    if (generation !== state.generation) return;
    state.actorsVersion++;
    updateActorRow(row, entry ?? row.entry, true);
    setMessage(row, "saved", done(entry ?? {}));
  } catch (e) {
    if (generation !== state.generation) return;
    if (e.status === 403) {
      state.actorsAllowed = false;
      show($("#actors"), false);
      show($("#actors-denied"), true);
    } else {
      setMessage(row, "error", handleCommonError(e));
    }
  } finally {
    for (const b of buttons) b.disabled = false;
    row.querySelector("button.reset").disabled = !row.entry?.overridden;
  }
}

// ---------------------------------------------------------------------------------------------
// Tenant quotas (Operators edit them; everyone who sees the tenant reads them above).

const QUOTA_FIELDS = ["maxConnections", "publishesPerSecond", "maxSubscriptionsPerConnection"];

function fillQuotaForm(q, overridden, force) {
  const form = $("#quota-form");
  form.entry = q;
  form.querySelector("button.reset").disabled = !overridden;
  if (form.dataset.dirty && !force) return;
  delete form.dataset.dirty;
  for (const name of QUOTA_FIELDS) {
    const field = form.querySelector(`[name=${name}]`);
    if (document.activeElement !== field || force) field.value = fmt(q[name]);
  }
}

async function quotaRequest(method, body, done) {
  const form = $("#quota-form");
  const key = state.selected;
  const generation = state.generation;
  const buttons = form.querySelectorAll("button");
  for (const b of buttons) b.disabled = true;
  setFormMessage(form, "pending", "saving…");
  try {
    const r = await api(method, `/api/v1/admin/tenants/${encodeURIComponent(key)}/quotas`, body);
    if (generation !== state.generation || key !== state.selected) return;
    fillQuotaForm(r.quotas ?? {}, r.overridden, true);
    setFormMessage(form, "saved", done(r));
    refreshTenant();
  } catch (e) {
    if (generation === state.generation) setFormMessage(form, "error", handleCommonError(e));
  } finally {
    for (const b of buttons) b.disabled = false;
  }
}

$("#quota-form").addEventListener("input", () => {
  $("#quota-form").dataset.dirty = "1";
  setFormMessage($("#quota-form"), "", "");
});
$("#quota-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = $("#quota-form");
  const last = form.entry ?? {};
  const patch = {};
  try {
    for (const name of QUOTA_FIELDS) {
      const value = form.querySelector(`[name=${name}]`).value;
      if (value.trim() !== String(last[name])) patch[name] = wholeNumber(name, value);
    }
  } catch (e) {
    setFormMessage(form, "error", e.message);
    return;
  }
  if (Object.keys(patch).length === 0) {
    setFormMessage(form, "", "nothing changed");
    return;
  }
  const persisted = $("#actors-persist").textContent.startsWith("Changes are stored");
  quotaRequest("PUT", patch, () => savedText("quotas saved", persisted));
});
$("#quota-form button.reset").addEventListener("click", () => {
  quotaRequest("DELETE", undefined, () => "quotas back to the defaults");
});

// ---------------------------------------------------------------------------------------------
// Charts: the node's samples (GET /api/v1/admin/samples), drawn as inline SVG lines.

async function refreshSamples() {
  const generation = state.generation;
  try {
    const body = await api("GET", "/api/v1/admin/samples");
    if (generation !== state.generation) return;
    renderCharts(body ?? {});
    show($("#charts-panel"), true);
    $("#charts-error").textContent = "";
  } catch (e) {
    if (generation !== state.generation) return;
    if (e.status === 403) show($("#charts-panel"), false);
    else $("#charts-error").textContent = handleCommonError(e);
  }
}

function renderCharts(body) {
  const points = Array.isArray(body.points) ? body.points : [];
  const windowMs = (Number(body.windowSecs) || 900) * 1000;
  const every = Number(body.intervalMs) || 0;
  $("#charts-state").textContent = `(a point every ${every >= 1000 ? `${every / 1000} s` : `${every} ms`}, ${points.length} so far)`;
  const notRunning = state.notRunning ?? new Set();
  const kinds = (points.length ? Object.keys(points[points.length - 1].actors ?? {}) : [])
    .filter((k) => !notRunning.has(k));
  const single = (name) => [{ name, colour: KIND_COLOURS[0], values: points.map((p) => Number(p[name]) || 0) }];
  const perKind = (field) => kinds.map((k, i) => ({
    name: k, colour: KIND_COLOURS[i % KIND_COLOURS.length],
    values: points.map((p) => Number(p.actors?.[k]?.[field]) || 0),
  }));
  const times = points.map((p) => Number(p.at) || 0);
  for (const name of ["deliveredPerSecond", "publishedPerSecond", "connections", "slowConsumerDisconnects"]) {
    drawChart(name, times, windowMs, single(name));
  }
  drawChart("queueDepth", times, windowMs, perKind("queueDepth"));
  drawChart("mailboxFull", times, windowMs, perKind("mailboxFull"));
  $("#charts-legend").replaceChildren(...kinds.map((k, i) =>
    el("span", { class: "key", "data-colour": KIND_COLOURS[i % KIND_COLOURS.length] },
      svgSwatch(KIND_COLOURS[i % KIND_COLOURS.length]), ` ${k}`)));
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function svgSwatch(colour) {
  const s = svg("svg", { width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true" });
  s.append(svg("rect", { x: 1, y: 1, width: 10, height: 10, fill: colour }));
  return s;
}

/** One chart: x is time over the window ending now, y from 0 to the series' maximum. */
function drawChart(name, times, windowMs, series) {
  const figure = document.querySelector(`figure[data-chart=${name}]`);
  // The window ends at the newest point and reaches back 15 minutes, or to the first point when
  // the node has not been sampling that long.
  const end = times.length ? times[times.length - 1] : Date.now();
  const start = Math.max(end - windowMs, times.length > 1 ? times[0] : end - windowMs);
  const span = Math.max(1, end - start);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const pad = { l: 34, r: 6, t: 6, b: 16 };
  const w = CHART_W - pad.l - pad.r;
  const h = CHART_H - pad.t - pad.b;
  const x = (t) => pad.l + Math.max(0, (t - start) / span) * w;
  const y = (v) => pad.t + h - (v / max) * h;
  const root = svg("svg", { viewBox: `0 0 ${CHART_W} ${CHART_H}`, role: "img", "aria-label": name });
  root.append(
    svg("line", { x1: pad.l, y1: pad.t + h, x2: pad.l + w, y2: pad.t + h, stroke: "#d9dde5" }),
    svg("line", { x1: pad.l, y1: pad.t, x2: pad.l + w, y2: pad.t, stroke: "#eef0f4" }));
  const label = (tx, ty, text, anchor) => {
    const t = svg("text", { x: tx, y: ty, "font-size": 10, fill: "#667085", "text-anchor": anchor });
    t.textContent = text;
    return t;
  };
  root.append(label(pad.l - 4, pad.t + 8, shortNumber(max), "end"), label(pad.l - 4, pad.t + h, "0", "end"),
    label(pad.l, CHART_H - 3, `-${fmtSpan(span)}`, "start"), label(pad.l + w, CHART_H - 3, "now", "end"));
  let latest = 0;
  for (const s of series) {
    if (s.values.length === 0) continue;
    const d = s.values.map((v, i) => `${i ? "L" : "M"}${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    root.append(svg("path", { d, fill: "none", stroke: s.colour, "stroke-width": 1.5, "data-series": s.name }));
    latest += s.values[s.values.length - 1];
  }
  const peak = Math.max(0, ...series.flatMap((s) => s.values));
  figure.dataset.points = String(times.length);
  figure.dataset.max = String(peak);
  figure.dataset.last = String(latest);
  figure.querySelector(".last").textContent = times.length ? `now ${shortNumber(latest)} · max ${shortNumber(peak)}` : "";
  const old = figure.querySelector("svg");
  if (old) old.replaceWith(root);
  else figure.append(root);
}

/** "15 min", "2 min", "40 s": how far back a chart reaches. */
function fmtSpan(ms) {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.round(s / 60)} min` : `${s} s`;
}

function shortNumber(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// ---------------------------------------------------------------------------------------------
// Start

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("#token").value.trim();
  if (token) signIn(token);
});
$("#logout").addEventListener("click", () => signOut());

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
else $("#token").focus();
