// The demo page: a supervisor console (assigns through the workbin API), an agent
// desktop (the workbin notifications, through bayeux.js) and a live view of the server
// (GET /stats every second). Query parameters: view=all|supervisor|agent|server,
// user=NAME (fills the sign-in), transport=websocket|long-polling (forces one).

import { BayeuxClient, State, basic } from "./bayeux.js";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";

const params = new URLSearchParams(location.search);
const bayeuxPath = meta("bayeux-path") || "/cometd";
const demoMode = meta("bayeux-mode") !== "users";

/** The signed-in user: {user, password}, or null. */
let credentials = null;
let client = null;

// --- views ---------------------------------------------------------------------------

const view = ["supervisor", "agent", "server"].includes(params.get("view"))
  ? params.get("view")
  : "all";
document.body.dataset.view = view;
for (const link of document.querySelectorAll("nav.views a")) {
  if (link.dataset.view === view) link.setAttribute("aria-current", "page");
}

if (demoMode) {
  $("signin-password").placeholder = "password (any)";
  $("mode-note").textContent =
    "Demo mode: any name signs in, with any password, and anyone may assign. " +
    "Start the server with --users FILE to check credentials and roles.";
} else {
  $("signin-password").required = true;
  $("mode-note").textContent =
    "Credentials are checked (--users): an agent sees only its own items; only a supervisor may assign.";
}
$("mode-note").hidden = false;

// --- sign in -------------------------------------------------------------------------

$("signin-name").value = params.get("user") ?? "";
$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const user = $("signin-name").value.trim();
  if (!user) return;
  signIn({ user, password: $("signin-password").value });
});
$("signout-button").addEventListener("click", () => signOut());

function signIn(creds) {
  credentials = creds;
  $("signin").hidden = true;
  $("signed-in").hidden = false;
  $("whoami").textContent = `signed in as ${creds.user}`;
  $("desktop-empty").textContent = "No items yet: they appear here as their notifications arrive.";
  startDesktop();
}

async function signOut() {
  credentials = null;
  const old = client;
  client = null;
  await old?.disconnect();
  $("signin").hidden = false;
  $("signed-in").hidden = true;
  $("items").tBodies[0].replaceChildren();
  rows.clear();
  $("desktop-empty").hidden = false;
  $("desktop-empty").textContent = "Sign in to see your workbin.";
  showState(State.DISCONNECTED, "");
  showTransport(null);
}

// --- the agent desktop -----------------------------------------------------------------

/**
 * Rows by assignment: both notifications of one fill one row. The key is the
 * referenceId and the interaction's id (a restarted server counts referenceIds from 1
 * again).
 */
const rows = new Map();

function startDesktop() {
  const forced = params.get("transport");
  const transports = forced ? [forced] : ["websocket", "long-polling"];
  client = new BayeuxClient(new URL(bayeuxPath, location.href).href, {
    credentials,
    transports,
  });
  client.addEventListener("state", (e) => showState(e.detail.state, e.detail.reason));
  client.addEventListener("transport", (e) => showTransport(e.detail.transport));
  client.addEventListener("advice", (e) => showAdvice(e.detail.advice));
  client.addEventListener("handshake", (e) => {
    document.body.dataset.ack = String(e.detail.ack);
  });
  // /v2/me/* : the workbin changes and every media channel, for this session's user
  // only (the server delivers them per user, never broadcast).
  client.subscribe("/v2/me/*", (message) => showNotification(message));
  client.start();
}

function showState(state, reason) {
  $("conn").className = `pill state-${state}`;
  $("conn-state").textContent = state;
  $("conn-reason").textContent = reason && state !== State.CONNECTED ? reason : "";
  document.body.dataset.connection = state;
}

function showTransport(transport) {
  $("transport").textContent = transport ?? "none";
}

function showAdvice(advice) {
  const multiple = advice["multiple-clients"] === true;
  $("multiple-clients").hidden = !multiple;
  document.body.dataset.multipleClients = String(multiple);
  if (multiple) $("mc-interval").textContent = `${advice.interval} ms`;
}

/** One notification: creates or completes the row of its referenceId. */
function showNotification(message) {
  const data = message.data ?? {};
  const reference = data.referenceId;
  if (reference === undefined) return;
  const media = ["email", "chat", "workitem"].find((k) => data[k]);
  const interaction = media ? data[media].id : data.interactionId;
  const key = `${reference}/${interaction}`;
  let row = rows.get(key);
  if (!row) {
    row = newRow(reference, interaction);
    rows.set(key, row);
  }
  if (data.messageType === "WorkbinStateChangeMessage") {
    row.cells.workbin.textContent = data.id ?? "";
    row.cells.id.textContent ||= data.interactionId ?? "";
    row.cells.type.textContent ||= (data.operationName ?? "").replace(/^Add/, "");
    return;
  }
  // The interaction's own state change: its object is under its media's key.
  if (!media) return;
  const item = data[media];
  row.cells.type.textContent = media;
  row.cells.id.textContent = item.id ?? "";
  row.cells.state.textContent = item.state ?? "";
  const assigned = Date.parse(String(item.receivedDate ?? "").replace(/\+0000$/, "Z"));
  if (!Number.isNaN(assigned)) {
    row.cells.latency.textContent = `${Math.max(0, Date.now() - assigned)} ms`;
  }
}

function newRow(reference, interaction) {
  const tr = document.createElement("tr");
  tr.dataset.referenceId = String(reference);
  tr.dataset.interaction = String(interaction);
  tr.className = "new";
  const cells = {};
  for (const name of ["type", "id", "state", "workbin", "reference", "latency"]) {
    const td = document.createElement("td");
    td.className = `c-${name}`;
    tr.append(td);
    cells[name] = td;
  }
  cells.reference.textContent = String(reference);
  $("items").tBodies[0].prepend(tr);
  $("desktop-empty").hidden = true;
  setTimeout(() => tr.classList.remove("new"), 1500);
  return { tr, cells };
}

// --- the supervisor console ------------------------------------------------------------

function newUri() {
  const id = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("").toUpperCase();
  return `.../${id}`;
}
$("assign-uri").value = newUri();

$("assign").addEventListener("submit", async (event) => {
  event.preventDefault();
  const agent = $("assign-agent").value.trim();
  const workbin = $("assign-workbin").value.trim();
  const body = { operationName: $("assign-op").value, uri: $("assign-uri").value.trim() };
  const url = `/api/v2/users/${encodeURIComponent(agent)}/workbins/${encodeURIComponent(workbin)}`;
  const headers = { "Content-Type": "application/json" };
  if (credentials) headers.Authorization = basic(credentials);
  const started = performance.now();
  let text;
  let cls = "error";
  try {
    const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
    const reply = await response.json().catch(() => null);
    const ms = Math.round(performance.now() - started);
    if (reply && reply.statusCode === 0) {
      cls = "ok";
      text = `${body.operationName} → ${agent}/${workbin}: statusCode 0, referenceId ${reply.referenceId} (${ms} ms)`;
    } else if (reply) {
      text = `${body.operationName} → ${agent}/${workbin}: HTTP ${response.status}, statusCode ${reply.statusCode}: ${reply.statusMessage ?? ""}`;
    } else {
      text = `HTTP ${response.status}`;
    }
    showReply(text, cls, reply);
  } catch (e) {
    showReply(`failed: ${e.message}`, "error", null);
  }
  $("assign-uri").value = newUri();
});

function showReply(text, cls, reply) {
  const li = document.createElement("li");
  li.className = cls;
  li.textContent = text;
  if (reply?.referenceId !== undefined) li.dataset.referenceId = String(reply.referenceId);
  if (reply?.statusCode !== undefined) li.dataset.statusCode = String(reply.statusCode);
  $("replies").prepend(li);
  while ($("replies").children.length > 8) $("replies").lastElementChild.remove();
}

// --- the live view of the server ---------------------------------------------------------

const history = [];
const HISTORY = 60;
let previous = null;
let polls = 0;

async function pollStats() {
  try {
    const response = await fetch("/stats", { cache: "no-store" });
    const stats = await response.json();
    let rate = 0;
    if (previous && stats.time > previous.time) {
      rate = ((stats.messagesDelivered - previous.messagesDelivered) * 1000) / (stats.time - previous.time);
    }
    previous = stats;
    history.push({ sessions: stats.sessions, rate: Math.max(0, rate), pending: stats.connectsPending });
    while (history.length > HISTORY) history.shift();
    $("n-sessions").textContent = String(stats.sessions);
    $("n-deliveries").textContent = rate.toFixed(rate < 10 ? 1 : 0);
    $("n-pending").textContent = String(stats.connectsPending);
    $("server").classList.remove("stale");
    document.body.dataset.statsPolls = String(++polls);
  } catch {
    $("server").classList.add("stale");
  }
  drawChart();
}

function drawChart() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 640;
  const height = canvas.clientHeight || 150;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const styles = getComputedStyle(document.body);
  const pad = 6;
  ctx.strokeStyle = styles.getPropertyValue("--grid").trim() || "#e5e7eb";
  ctx.lineWidth = 1;
  for (let i = 1; i < 4; i++) {
    const y = Math.round((height * i) / 4) + 0.5;
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(width, y);
    ctx.stroke();
  }
  const max = Math.max(4, ...history.flatMap((h) => [h.sessions, h.rate, h.pending])) * 1.15;
  const series = [
    ["sessions", "--c-sessions"],
    ["rate", "--c-deliveries"],
    ["pending", "--c-pending"],
  ];
  for (const [key, color] of series) {
    ctx.strokeStyle = styles.getPropertyValue(color).trim();
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((h, i) => {
      const x = pad + ((width - 2 * pad) * (i + HISTORY - history.length)) / (HISTORY - 1);
      const y = height - pad - ((height - 2 * pad) * h[key]) / max;
      if (i === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

if (view === "all" || view === "server") {
  pollStats();
  setInterval(pollStats, 1000);
}

// ?user=NAME&password=... is not offered: a password stays out of URLs and history.
// In demo mode ?user=NAME signs in at once.
if (demoMode && params.get("user")) {
  signIn({ user: params.get("user"), password: "" });
}
