#!/usr/bin/env node
// A Bayeux load generator whose clients cost what real Node clients cost: the
// client-bound counterpart of `bayeux bench` (which drives thousands of raw sessions from
// one cheap Rust process). Every request is built with JSON.stringify and every response
// or frame is read with JSON.parse; each long-polling subscriber has an HTTP/1.1
// keep-alive agent of its own (one connection), each WebSocket subscriber a `ws` socket.
//
//   node benches/node_load.mjs URL [--transport long-polling|websocket] [--subscribers N]
//        [--channels C] [--publishers P] [--batch B] [--rate R] [--duration D]
//        [--drain S] [--payload BYTES] [--poll-timeout S] [--json]
//
// N subscribers, spread round-robin over channels /bench/0 .. /bench/C-1, handshake,
// subscribe and connect (`connectionType` long-polling or websocket; the first connect
// asks for an immediate answer with advice.timeout 0; on WebSocket each connect reply is
// answered with the next connect). Cookies the server sets (cometd-nodejs-server's
// BAYEUX_BROWSER) are kept per session and sent back. P publishers, each a session of its
// own kept alive by a connect loop, POST batches of B messages back to back (each POST as
// soon as the previous one is answered) or, with --rate, R messages/s over all
// publishers, for D seconds; then the run drains until every expected delivery arrived
// or S seconds passed. Each message's data is {p: publisher, s: sequence on its channel,
// t: send time in µs on this process's monotonic clock (performance.now), x: padding}.
//
// Prints one JSON line on stdout with the keys `bayeux bench --json` reports (delivered,
// delivered_per_sec, published, lost, duplicates, latency_ms, messages_per_response,
// subscribers, tool_cpu_seconds, ...). Progress goes to stderr unless --json is given.
// Speaks what bayeux, Faye's Node server and cometd-nodejs-server accept. Only the
// Node standard library and `ws` (from tests/interop/node_modules).
import http from 'node:http';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

const require = createRequire(new URL('../tests/interop/package.json', import.meta.url));
const WebSocket = require('ws');

// ---------------------------------------------------------------- options

const USAGE = 'usage: node benches/node_load.mjs URL [--transport long-polling|websocket] ' +
  '[--subscribers N] [--channels C] [--publishers P] [--batch B] [--rate R] [--duration D] ' +
  '[--drain S] [--payload BYTES] [--poll-timeout S] [--json]';

function parseArgs(argv) {
  const o = {
    url: null, transport: 'long-polling', subscribers: 100, channels: 1, publishers: 1,
    batch: 1, rate: 0, duration: 10, drain: 3, payload: 32, pollTimeout: 45, json: false,
  };
  const numeric = {
    '--subscribers': 'subscribers', '--channels': 'channels', '--publishers': 'publishers',
    '--batch': 'batch', '--rate': 'rate', '--duration': 'duration', '--drain': 'drain',
    '--payload': 'payload', '--poll-timeout': 'pollTimeout',
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { value = a.slice(eq + 1); a = a.slice(0, eq); }
    const take = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--json') o.json = true;
    else if (a === '--transport') o.transport = take();
    else if (a in numeric) {
      const v = Number(take());
      if (!Number.isFinite(v) || v < 0) fail(`${a}: not a non-negative number`);
      o[numeric[a]] = v;
    } else if (a === '-h' || a === '--help') { console.log(USAGE); process.exit(0); }
    else if (!a.startsWith('-') && o.url === null) o.url = a;
    else fail(`unknown argument ${a}`);
  }
  if (!o.url) fail('no URL');
  if (!['long-polling', 'websocket'].includes(o.transport)) fail(`--transport ${o.transport}`);
  o.subscribers = Math.floor(o.subscribers);
  o.publishers = Math.floor(o.publishers);
  o.channels = Math.max(1, Math.floor(o.channels));
  o.batch = Math.max(1, Math.floor(o.batch));
  return o;
}

function fail(message) {
  console.error(`node_load: ${message}\n${USAGE}`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const endpoint = new URL(opts.url);
if (endpoint.protocol !== 'http:') fail(`${opts.url}: only http:// endpoints`);
const HOST = endpoint.hostname;
const PORT = Number(endpoint.port || 80);
const PATH = endpoint.pathname + endpoint.search;
const WS_URL = `ws://${endpoint.host}${PATH}`;
const HTTP_TIMEOUT_MS = 10_000;
const POLL_TIMEOUT_MS = opts.pollTimeout * 1000;

// ---------------------------------------------------------------- state

/** Microseconds on this process's monotonic clock: send stamps and receive times. */
const micros = () => Math.round(performance.now() * 1000);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const counters = {
  published: 0, delivered: 0, duplicates: 0, handshakes: 0,
  http_errors: 0, bayeux_errors: 0, rehandshakes: 0,
};
const publishedPerChannel = new Array(opts.channels).fill(0);
let ready = 0;
let running = true;

/**
 * A log-linear histogram of positive integers (as HdrHistogram with 3 significant
 * digits: 2048 exact values, then 1024 sub-buckets per power of two), up to 2^31 - 1.
 */
class Histogram {
  constructor() {
    this.counts = new Float64Array(23 * 1024);
    this.n = 0;
    this.sum = 0;
    this.max = 0;
  }

  record(value) {
    const v = Math.min(Math.max(1, Math.round(value)), 0x7fffffff);
    const b = Math.max(0, 31 - Math.clz32(v) - 10);
    this.counts[b * 1024 + (v >>> b)]++;
    this.n++;
    this.sum += v;
    if (v > this.max) this.max = v;
  }

  /** The highest value equivalent to the one at quantile `q`. */
  quantile(q) {
    if (this.n === 0) return 0;
    const target = Math.max(1, Math.ceil(q * this.n));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= target) {
        const b = i < 2048 ? 0 : (i >> 10) - 1;
        const sub = i - b * 1024;
        return Math.min((sub + 1) * 2 ** b - 1, this.max);
      }
    }
    return this.max;
  }

  reset() {
    this.counts.fill(0);
    this.n = 0;
    this.sum = 0;
    this.max = 0;
  }
}

const latencies = new Histogram(); // µs, the whole run
const window = new Histogram(); // µs, the current progress second
const perResponse = new Histogram(); // deliveries per response/frame that carried any

// ---------------------------------------------------------------- Bayeux over HTTP

/** Keeps the cookies a response sets (name=value only). */
function storeCookies(jar, setCookie) {
  if (!setCookie) return;
  for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
    const pair = line.split(';', 1)[0];
    const eq = pair.indexOf('=');
    if (eq > 0) jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
}

function cookieHeader(jar) {
  if (jar.size === 0) return null;
  let out = '';
  for (const [name, value] of jar) out += (out ? '; ' : '') + `${name}=${value}`;
  return out;
}

/** POSTs `messages` (JSON-encoded) on `agent`; resolves with the parsed reply batch. */
function post(agent, jar, messages, timeoutMs) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify(messages);
    const headers = {
      'Content-Type': 'application/json;charset=UTF-8',
      'Content-Length': Buffer.byteLength(body),
    };
    const cookie = cookieHeader(jar);
    if (cookie) headers.Cookie = cookie;
    let settled = false;
    const done = (err, value) => {
      if (settled) return;
      settled = true;
      if (err) reject(err);
      else resolve(value);
    };
    const req = http.request({ host: HOST, port: PORT, path: PATH, method: 'POST', agent, headers }, (res) => {
      storeCookies(jar, res.headers['set-cookie']);
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('error', (e) => done(e));
      res.on('aborted', () => done(new Error('aborted')));
      res.on('end', () => {
        if (res.statusCode < 200 || res.statusCode >= 300) {
          done(Object.assign(new Error(`HTTP ${res.statusCode}`), { http: true }));
          return;
        }
        let msgs;
        try {
          msgs = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch (e) {
          done(Object.assign(e, { bayeux: true }));
          return;
        }
        done(null, Array.isArray(msgs) ? msgs : [msgs]);
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error('timeout')));
    req.on('error', (e) => done(e));
    req.end(body);
  });
}

/** Counts a failed exchange as an HTTP or a Bayeux (unparseable body) error. */
function countFailure(e) {
  if (e && e.bayeux) counters.bayeux_errors++;
  else counters.http_errors++;
}

function handshakeMessage(connectionType) {
  return {
    channel: '/meta/handshake', version: '1.0', minimumVersion: '1.0',
    supportedConnectionTypes: [connectionType], id: '1',
  };
}

function subscribeMessage(clientId, channel) {
  return { channel: '/meta/subscribe', clientId, subscription: channel, id: '2' };
}

function connectMessage(clientId, connectionType, first) {
  const m = { channel: '/meta/connect', clientId, connectionType, id: '3' };
  if (first) m.advice = { timeout: 0 };
  return m;
}

/** Opens a long-polling session on `agent`: its clientId, or null after counting why. */
async function handshake(agent, jar) {
  let msgs;
  try {
    msgs = await post(agent, jar, [handshakeMessage('long-polling')], HTTP_TIMEOUT_MS);
  } catch (e) {
    countFailure(e);
    return null;
  }
  const m = msgs.find((x) => x && x.channel === '/meta/handshake');
  if (m && m.successful === true && typeof m.clientId === 'string') {
    counters.handshakes++;
    return m.clientId;
  }
  counters.bayeux_errors++;
  return null;
}

async function subscribe(agent, jar, clientId, channel) {
  let msgs;
  try {
    msgs = await post(agent, jar, [subscribeMessage(clientId, channel)], HTTP_TIMEOUT_MS);
  } catch (e) {
    countFailure(e);
    return false;
  }
  if (msgs.some((x) => x && x.channel === '/meta/subscribe' && x.successful === true)) return true;
  counters.bayeux_errors++;
  return false;
}

/**
 * Handles a batch of received messages: records each delivery's latency, duplicates and
 * the batch's size. Returns what the `/meta/connect` reply in it says to do next:
 * null (no connect reply), {interval} (connect again after it) or {handshake: true}.
 */
function onMessages(next, msgs) {
  const now = micros();
  let after = null;
  let delivered = 0;
  for (const m of msgs) {
    if (!m) continue;
    if (m.channel === '/meta/connect') {
      const advice = m.advice || {};
      after = { interval: Math.max(0, Number(advice.interval) || 0) };
      const reconnect = advice.reconnect;
      if (m.successful === false || reconnect === 'handshake') {
        if (reconnect === 'handshake' || reconnect === undefined) after = { handshake: true };
        counters.bayeux_errors++;
      }
      continue;
    }
    const d = m.data;
    if (!d || typeof d.p !== 'number' || typeof d.s !== 'number' || typeof d.t !== 'number') continue;
    delivered++;
    const latency = now - d.t;
    latencies.record(latency);
    window.record(latency);
    const expected = next.get(d.p) || 0;
    if (d.s < expected) counters.duplicates++;
    else next.set(d.p, d.s + 1);
  }
  counters.delivered += delivered;
  if (delivered > 0) perResponse.record(delivered);
  return after;
}

function signalReady() {
  ready++;
}

// ---------------------------------------------------------------- subscribers

const agents = [];
const sockets = new Set();

/** A long-polling subscriber: one keep-alive connection of its own, polls until the end. */
async function longPollingSubscriber(channel) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  agents.push(agent);
  const jar = new Map();
  const next = new Map();
  let signalled = false;
  while (running) {
    const clientId = await handshake(agent, jar);
    if (!clientId) { await sleep(200); continue; }
    if (!await subscribe(agent, jar, clientId, channel)) { await sleep(200); continue; }
    if (!signalled) { signalled = true; signalReady(); }
    let first = true;
    for (;;) {
      let msgs;
      try {
        msgs = await post(agent, jar, [connectMessage(clientId, 'long-polling', first)], POLL_TIMEOUT_MS);
      } catch (e) {
        if (!running) return;
        countFailure(e);
        await sleep(100);
        continue;
      }
      first = false;
      if (!running) return;
      const after = onMessages(next, msgs);
      if (after && after.handshake) { counters.rehandshakes++; break; }
      if (after && after.interval > 0) await sleep(after.interval);
    }
  }
}

/**
 * A WebSocket subscriber: a `ws` socket of its own; handshake and subscribe over it, then
 * a connect answered at once, and each connect reply answered with the next connect.
 * A socket that fails is reopened (cookies sent again) and the session resumed with a
 * connect; a session the server no longer knows is opened again.
 */
function webSocketSubscriber(channel) {
  const jar = new Map();
  const next = new Map();
  let clientId = null;
  let signalled = false;

  const open = () => {
    if (!running) return;
    const headers = {};
    const cookie = cookieHeader(jar);
    if (cookie) headers.Cookie = cookie;
    const ws = new WebSocket(WS_URL, { headers, handshakeTimeout: HTTP_TIMEOUT_MS });
    sockets.add(ws);
    let state = 'closed'; // 'handshake' | 'subscribe' | 'connected'
    let failed = false;
    // Setup replies must come within the HTTP timeout; once connected, a socket silent
    // for longer than the poll timeout is given up. Either way it is reopened.
    let watchdog = setTimeout(() => ws.terminate(), HTTP_TIMEOUT_MS);
    const send = (msg) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify([msg]));
    };
    const startHandshake = () => {
      state = 'handshake';
      clearTimeout(watchdog);
      watchdog = setTimeout(() => ws.terminate(), HTTP_TIMEOUT_MS);
      send(handshakeMessage('websocket'));
    };
    const startConnect = () => {
      state = 'connected';
      clearTimeout(watchdog);
      watchdog = setTimeout(() => ws.terminate(), POLL_TIMEOUT_MS);
      send(connectMessage(clientId, 'websocket', true));
    };
    ws.on('upgrade', (res) => storeCookies(jar, res.headers['set-cookie']));
    ws.on('open', () => (clientId ? startConnect() : startHandshake()));
    ws.on('message', (data) => {
      if (state === 'connected') watchdog.refresh();
      let msgs;
      try {
        msgs = JSON.parse(data.toString('utf8'));
      } catch {
        counters.bayeux_errors++;
        return;
      }
      if (!Array.isArray(msgs)) msgs = [msgs];
      if (state === 'handshake') {
        const m = msgs.find((x) => x && x.channel === '/meta/handshake');
        if (!m) return;
        if (m.successful === true && typeof m.clientId === 'string') {
          counters.handshakes++;
          clientId = m.clientId;
          state = 'subscribe';
          send(subscribeMessage(clientId, channel));
        } else {
          counters.bayeux_errors++;
          state = 'waiting';
          setTimeout(() => { if (running) startHandshake(); }, 200);
        }
        return;
      }
      if (state === 'subscribe') {
        const m = msgs.find((x) => x && x.channel === '/meta/subscribe');
        if (!m) return;
        if (m.successful === true) {
          if (!signalled) { signalled = true; signalReady(); }
          startConnect();
          onMessages(next, msgs); // deliveries in the same frame, if any
        } else {
          counters.bayeux_errors++;
          clientId = null;
          state = 'waiting';
          setTimeout(() => { if (running) startHandshake(); }, 200);
        }
        return;
      }
      if (state !== 'connected') return;
      const after = onMessages(next, msgs);
      if (!after) return;
      if (after.handshake) {
        counters.rehandshakes++;
        clientId = null;
        startHandshake();
      } else if (after.interval > 0) {
        setTimeout(() => send(connectMessage(clientId, 'websocket', false)), after.interval);
      } else {
        send(connectMessage(clientId, 'websocket', false));
      }
    });
    ws.on('error', () => { failed = true; });
    ws.on('close', () => {
      clearTimeout(watchdog);
      sockets.delete(ws);
      if (!running) return;
      counters.http_errors++;
      setTimeout(open, failed ? 200 : 100);
    });
  };
  open();
}

// ---------------------------------------------------------------- publishers

/** Keeps a publisher's session alive (servers expire sessions that never connect). */
async function keepAlive(agent, jar, clientId) {
  let first = true;
  while (running) {
    try {
      await post(agent, jar, [connectMessage(clientId, 'long-polling', first)], POLL_TIMEOUT_MS);
      first = false;
    } catch {
      if (!running) return;
      await sleep(100);
    }
  }
}

/**
 * One publisher: its own session (and connection pair: a keep-alive agent of two
 * sockets, one held by the connect loop), sending a batch per POST until `untilMs`,
 * each as soon as the previous one was answered or, with an interval, one per tick
 * (ticks missed while a POST was outstanding are skipped).
 */
async function publisher(index, intervalMs, untilMs) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  agents.push(agent);
  const jar = new Map();
  let clientId;
  while (!(clientId = await handshake(agent, jar))) await sleep(100);
  keepAlive(agent, jar, clientId);
  const channels = opts.channels;
  const seq = new Array(channels).fill(0);
  const payload = 'x'.repeat(opts.payload);
  let nextChannel = index % channels;
  let tick = performance.now();
  while (performance.now() < untilMs) {
    if (intervalMs > 0) {
      const now = performance.now();
      if (tick > now) await sleep(tick - now);
      const after = performance.now();
      tick += intervalMs;
      if (tick <= after) tick += Math.ceil((after - tick) / intervalMs) * intervalMs;
    }
    const batch = new Array(opts.batch);
    for (let k = 0; k < opts.batch; k++) {
      const c = nextChannel;
      nextChannel = (nextChannel + 1) % channels;
      batch[k] = {
        channel: `/bench/${c}`, clientId, id: String(k),
        data: { p: index, s: seq[c]++, t: micros(), x: payload },
      };
    }
    let replies;
    try {
      replies = await post(agent, jar, batch, HTTP_TIMEOUT_MS);
    } catch (e) {
      countFailure(e);
      continue;
    }
    for (const r of replies) {
      if (!r || typeof r.channel !== 'string' || !r.channel.startsWith('/bench/')) continue;
      if (r.successful === true) {
        const c = Number(r.channel.slice(7)) || 0;
        if (c < channels) publishedPerChannel[c]++;
        counters.published++;
      } else {
        counters.bayeux_errors++;
      }
    }
  }
}

// ---------------------------------------------------------------- the run

function percentiles(h) {
  const ms = (v) => v / 1000;
  return {
    p50: ms(h.quantile(0.5)), p90: ms(h.quantile(0.9)), p99: ms(h.quantile(0.99)),
    p999: ms(h.quantile(0.999)), max: ms(h.max),
  };
}

function expectedDeliveries() {
  const n = opts.subscribers;
  const c = opts.channels;
  let total = 0;
  for (let i = 0; i < c; i++) {
    total += publishedPerChannel[i] * (Math.floor(n / c) + (i < n % c ? 1 : 0));
  }
  return total;
}

function progress() {
  let lastPub = 0;
  let lastDel = 0;
  let seconds = 0;
  return setInterval(() => {
    seconds++;
    const p = counters.published;
    const d = counters.delivered;
    console.error(`[${String(seconds).padStart(3)}s] published ${String(p - lastPub).padStart(8)}/s  ` +
      `delivered ${String(d - lastDel).padStart(9)}/s  p99 ${(window.quantile(0.99) / 1000).toFixed(2).padStart(8)} ms  ` +
      `errors http ${counters.http_errors} bayeux ${counters.bayeux_errors}`);
    window.reset();
    lastPub = p;
    lastDel = d;
  }, 1000);
}

async function main() {
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < opts.subscribers; i++) {
    const channel = `/bench/${i % opts.channels}`;
    if (opts.transport === 'websocket') webSocketSubscriber(channel);
    else longPollingSubscriber(channel);
  }
  const setupDeadline = started + 120_000;
  while (ready < opts.subscribers) {
    if (performance.now() > setupDeadline) {
      console.error(`node_load: only ${ready} of ${opts.subscribers} subscribers were established within 120 s`);
      process.exit(1);
    }
    await sleep(20);
  }
  const setupSeconds = (performance.now() - started) / 1000;
  const handshakesPerSec = opts.subscribers / Math.max(setupSeconds, 1e-9);
  if (!opts.json) {
    console.error(`node_load: ${opts.subscribers} subscribers (${opts.transport}) established in ` +
      `${setupSeconds.toFixed(2)} s (${handshakesPerSec.toFixed(0)} handshakes/s)`);
  }

  const publishStart = performance.now();
  const until = publishStart + opts.duration * 1000;
  const intervalMs = opts.rate > 0 && opts.publishers > 0
    ? (opts.publishers * opts.batch * 1000) / opts.rate : 0;
  const ticker = opts.json ? null : progress();
  const publishers = [];
  for (let p = 0; p < opts.publishers; p++) publishers.push(publisher(p, intervalMs, until));
  await Promise.all(publishers);
  if (opts.publishers === 0) await sleep(Math.max(0, until - performance.now()));
  const publishSeconds = (performance.now() - publishStart) / 1000;

  // Drain: until every expected delivery arrived, or the drain time passed.
  const expected = expectedDeliveries();
  const drainUntil = performance.now() + opts.drain * 1000;
  while (performance.now() < drainUntil && counters.delivered - counters.duplicates < expected) {
    await sleep(20);
  }
  running = false;
  if (ticker) clearInterval(ticker);

  const cpu = process.cpuUsage(cpuBefore);
  const { delivered, duplicates, published } = counters;
  const perSec = (v) => v / Math.max(publishSeconds, 1e-9);
  const report = {
    url: opts.url,
    mode: 'pubsub via bayeux',
    client: 'node',
    transport: opts.transport,
    subscribers: opts.subscribers,
    stalled: 0,
    channels: opts.channels,
    publishers: opts.publishers,
    publish_seconds: publishSeconds,
    published,
    published_per_sec: perSec(published),
    delivered,
    delivered_per_sec: perSec(delivered),
    expected_deliveries: expected,
    lost: Math.max(0, expected - (delivered - duplicates)),
    duplicates,
    latency_ms: percentiles(latencies),
    messages_per_response: perResponse.n === 0
      ? { mean: 0, p99: 0, count: 0 }
      : { mean: perResponse.sum / perResponse.n, p99: perResponse.quantile(0.99), count: perResponse.n },
    handshakes: counters.handshakes,
    handshakes_per_sec: handshakesPerSec,
    rehandshakes: counters.rehandshakes,
    http_errors: counters.http_errors,
    bayeux_errors: counters.bayeux_errors,
    tool_cpu_seconds: (cpu.user + cpu.system) / 1e6,
  };
  process.stdout.write(JSON.stringify(report) + '\n', () => {
    for (const ws of sockets) ws.terminate();
    for (const agent of agents) agent.destroy();
    process.exit(0);
  });
}

main().catch((e) => {
  console.error(`node_load: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
