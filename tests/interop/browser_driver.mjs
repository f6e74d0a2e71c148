// Drives Chromium (Debian's, through playwright-core) against a bayeux server for the
// browser suite (tests/browser.rs, `cargo test --features browser --test browser`).
//
// Usage: node browser_driver.mjs SCENARIO [SCREENSHOT_PATH]
// SCENARIO: page | cometd | tabs | cross-site | faye | screenshot.
//
// The Rust test owns the server; the two talk in lines. This script writes JSON lines
// on stdout: {"ask":"start","origin":ORIGIN} (start the server, allowing ORIGIN by
// CORS, and serving callback-polling too with "callbackPolling":true; the answer is
// "started BASE_URL"), {"ask":"stop"} (answer "stopped"),
// {"step":NAME,"ok":BOOL,"detail":...} for each check, and {"done":true} at the end.
// It reads the answers on stdin. Everything is on 127.0.0.1; every wait is bounded.
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [scenario, screenshotPath] = process.argv.slice(2);
const WAIT = 15000;

// --- talking to the Rust test ---------------------------------------------------------

const answers = [];
const waiting = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const w = waiting.shift();
  if (w) w(line);
  else answers.push(line);
});
const nextAnswer = () =>
  answers.length > 0 ? Promise.resolve(answers.shift()) : new Promise((res) => waiting.push(res));
const say = (value) => process.stdout.write(JSON.stringify(value) + '\n');
async function ask(what, extra = {}) {
  say({ ask: what, ...extra });
  return nextAnswer();
}
async function startServer(origin, { callbackPolling = false } = {}) {
  const answer = await ask('start', {
    ...(origin ? { origin } : {}),
    ...(callbackPolling ? { callbackPolling } : {}),
  });
  const [word, base] = answer.split(' ');
  if (word !== 'started') throw new Error(`the test answered ${answer}`);
  return base;
}
let failures = 0;
function step(name, ok, detail) {
  if (!ok) failures++;
  say({ step: name, ok: Boolean(ok), detail: detail === undefined ? null : detail });
}
/** Runs `check` (a promise) as step `name`: ok if it resolves truthy within the wait. */
async function expectStep(name, check) {
  try {
    const value = await check;
    step(name, value !== false, value === true ? null : value);
    return value;
  } catch (e) {
    step(name, false, String(e.message ?? e).split('\n')[0]);
    return undefined;
  }
}

// --- the browser -----------------------------------------------------------------------

const executablePath = process.env.BAYEUX_CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath,
  headless: true,
  // page.test is another site on 127.0.0.1 (for the cross-site scenario).
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
    '--host-resolver-rules=MAP page.test 127.0.0.1'],
  timeout: 30000,
});
const deadline = setTimeout(() => {
  say({ step: 'scenario finished in time', ok: false, detail: `${scenario} took over 100 s` });
  process.exit(2);
}, 100000);

/** A page of our app at `base` + `query`, in `context`; page errors are steps. */
async function appPage(context, base, query) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => step(`no script error (${query})`, false, e.message));
  await page.goto(`${base}/${query}`);
  return page;
}
async function signIn(page, user, password) {
  await page.fill('#signin-name', user);
  await page.fill('#signin-password', password);
  await page.click('#signin-button');
}
const connection = (page) => page.evaluate(() => document.body.dataset.connection);
const waitConnection = (page, state) =>
  page.waitForSelector(`body[data-connection="${state}"]`, { state: 'attached' });
/** Assigns through the supervisor console; resolves to the reply's item in the list. */
async function assign(page, agent, op) {
  const before = await page.locator('#replies li').count();
  await page.fill('#assign-agent', agent);
  await page.selectOption('#assign-op', op);
  await page.click('#assign-button');
  await page.waitForFunction((n) => document.querySelectorAll('#replies li').length > n, before);
  const li = page.locator('#replies li').first();
  return {
    statusCode: Number(await li.getAttribute('data-status-code')),
    referenceId: await li.getAttribute('data-reference-id'),
    text: await li.textContent(),
  };
}
/** The row of an assignment on a desktop, once complete (its state shown). */
async function row(page, referenceId) {
  const selector = `tr[data-reference-id="${referenceId}"] td.c-state:not(:empty)`;
  await page.waitForSelector(selector);
  const tr = page.locator(`tr[data-reference-id="${referenceId}"]`).first();
  return {
    type: await tr.locator('td.c-type').textContent(),
    id: await tr.locator('td.c-id').textContent(),
    state: await tr.locator('td.c-state').textContent(),
    latency: await tr.locator('td.c-latency').textContent(),
  };
}

// --- scenarios -------------------------------------------------------------------------

/** The page with --users: a supervisor assigns, only the right agent sees it, and a
 * desktop rides out a server restart. */
async function pageScenario() {
  const base = await startServer();
  const sup = await appPage(await browser.newContext(), base, '?view=supervisor');
  await signIn(sup, 'boss', 'boss-pw');
  const a1 = await appPage(await browser.newContext(), base, '?view=agent');
  await signIn(a1, 'agent1', 'agent1-pw');
  const a2 = await appPage(await browser.newContext(), base, '?view=agent');
  await signIn(a2, 'agent2', 'agent2-pw');
  await expectStep('agent desktops connected', Promise.all([waitConnection(a1, 'connected'), waitConnection(a2, 'connected')]).then(() => true));
  await expectStep('the transport in use is shown', a1.textContent('#transport').then((t) => t === 'websocket' || t));
  await expectStep('the ack extension is on', a1.evaluate(() => document.body.dataset.ack).then((a) => a === 'true' || a));
  // A network where WebSocket does not get through (the upgrade is taken, then the
  // socket dropped): the desktop falls back to long-polling, and says so.
  const noWs = await (await browser.newContext()).newPage();
  noWs.setDefaultTimeout(WAIT);
  await noWs.routeWebSocket(/\/cometd/, (ws) => ws.close({ code: 1011, reason: 'blocked by the test' }));
  await noWs.goto(`${base}/?view=agent`);
  await signIn(noWs, 'agent2', 'agent2-pw');
  await expectStep('without WebSocket, the desktop falls back to long-polling',
    waitConnection(noWs, 'connected').then(async () => (await noWs.textContent('#transport')) === 'long-polling' || await noWs.textContent('#transport')));
  const bad = await appPage(await browser.newContext(), base, '?view=agent');
  await signIn(bad, 'agent1', 'wrong');
  await expectStep('a wrong password is refused, and the desktop says so', waitConnection(bad, 'offline').then(async () => {
    const reason = await bad.textContent('#conn-reason');
    return /credentials/.test(reason) || reason;
  }));
  await bad.close();

  const first = await assign(sup, 'agent1', 'AddEmail');
  await expectStep('the supervisor sees statusCode 0 and a referenceId', first.statusCode === 0 && first.referenceId !== null ? true : first);
  await expectStep('the agent sees the item with its referenceId', row(a1, first.referenceId).then((r) =>
    (r.type === 'email' && r.state === 'InWorkbin' && /^\d+ ms$/.test(r.latency)) || r));
  const second = await assign(sup, 'agent2', 'AddChat');
  await expectStep('another agent sees only its own items', row(a2, second.referenceId).then(async () => {
    const refs = await a2.locator('#items tbody tr').evaluateAll((trs) => trs.map((t) => t.dataset.referenceId));
    return (refs.length === 1 && refs[0] === second.referenceId) || refs;
  }));
  const a1console = await appPage(await browser.newContext(), base, '?view=supervisor');
  await signIn(a1console, 'agent1', 'agent1-pw');
  const refused = await assign(a1console, 'agent2', 'AddChat');
  await a1console.close();
  await expectStep('an agent may not assign (statusCode 8)', refused.statusCode === 8 || refused);

  // The server restarts: the desktop shows it, then recovers on a new session.
  const stopped = await ask('stop');
  await expectStep('the server stopped', stopped === 'stopped' || stopped);
  await expectStep('the desktop shows reconnecting', waitConnection(a1, 'reconnecting').then(() => true));
  await startServer();
  await expectStep('the desktop reconnects after the restart', waitConnection(a1, 'connected').then(() => true));
  const third = await assign(sup, 'agent1', 'AddWorkitem');
  await expectStep('the next assignment reaches the desktop after the restart', row(a1, third.referenceId).then(async () => {
    const types = await a1.locator('#items tbody td.c-type').allTextContents();
    return (types.length === 2 && types[0] === 'workitem') || types;
  }));
}

/** The official CometD JavaScript client on a page of another origin. */
async function cometdScenario() {
  const good = await pageServer();
  const evil = await pageServer();
  const base = await startServer(good.origin);
  const url = `${base}/cometd`;
  for (const transport of ['websocket', 'long-polling']) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    await page.goto(`${good.origin}/`);
    await page.waitForFunction(() => typeof window.runCometd === 'function');
    const result = await page.evaluate(([u, t]) => window.runCometd(u, t), [url, transport]);
    const label = (what) => `cometd-js in Chromium, ${transport}, cross-origin: ${what}`;
    step(label('handshake'), result.handshake === true, result.handshake);
    step(label('transport'), result.transport === transport, result.transport);
    step(label('subscribe'), result.subscribe === true, result.subscribe);
    step(label('publish reply'), result.publish === true, result.publish);
    step(label('receive'), result.received === `hello over ${transport}`, result.received);
    step(label('disconnect'), result.disconnect === true, result.error ?? result.disconnect);
    const cookies = await context.cookies(base);
    const cookie = cookies.find((c) => c.name === 'BAYEUX_BROWSER');
    step(label('the BAYEUX_BROWSER cookie is kept'),
      cookie && cookie.httpOnly && cookie.path === '/' && cookie.sameSite === 'Lax', cookie ?? cookies);
    await context.close();
  }
  // A page of an origin that --cors-origin does not list cannot talk to the server.
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(`${evil.origin}/`);
  await page.waitForFunction(() => typeof window.runCometd === 'function');
  const result = await page.evaluate(([u]) => window.runCometd(u, 'long-polling', 4000), [url]);
  step('cometd-js from an origin not allowed: the browser refuses the answer (CORS)',
    result.handshake !== true, result);
  await context.close();
  good.server.close();
  evil.server.close();
}

/** Another site (http://page.test) and our server under TLS (https://127.0.0.1, its
 * certificate from a CA of the test's, accepted by the context): the BAYEUX_BROWSER
 * cookie must be Secure and SameSite=None to be sent across sites, and Partitioned to
 * be kept at all (Chromium blocks unpartitioned third-party cookies); the
 * multiple-clients advice to the page's second client proves it was sent back. */
async function crossSiteScenario() {
  const site = await pageServer('page.test');
  const base = await startServer(site.origin);
  step('the server is on https', base.startsWith('https://127.0.0.1:'), base);
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => step('no script error (page.test)', false, e.message));
  await page.goto(`${site.origin}/`);
  await page.waitForFunction(() => typeof window.runTwo === 'function');
  const result = await page.evaluate(([u]) => window.runTwo(u), [`${base}/cometd`]);
  step('cometd-js, another site, TLS: two clients handshake', result.handshakes === 2, result);
  const cookies = await context.cookies(base);
  const cookie = cookies.find((c) => c.name === 'BAYEUX_BROWSER');
  step('the cookie is Secure; SameSite=None; Partitioned (by the page\'s site); HttpOnly; Path=/',
    cookie && cookie.secure && cookie.sameSite === 'None' && cookie.httpOnly && cookie.path === '/' &&
      cookie.partitionKey === 'http://page.test',
    cookie ?? cookies);
  step('the browser sends it back across sites: one client gets multiple-clients',
    result.multipleClients === 1, result);
  step('both clients receive', result.received === 2, result);
  await context.close();
  site.server.close();
}

/** Faye's browser client (npm `faye`) on a page of another site: the page is on
 * http://127.0.0.1:P, the endpoint on http://localhost:S. Faye handshakes over
 * callback-polling (JSONP) there, then takes websocket, else cross-origin-long-polling
 * (CORS). In each of three runs (WebSocket open, WebSocket dropped by the network,
 * WebSocket disabled by the page) it subscribes, publishes, and receives both its own
 * message and one published from outside once its subscription is confirmed. */
async function fayeScenario() {
  const site = await pageServer();
  const base = await startServer(site.origin, { callbackPolling: true });
  const url = `${base.replace('127.0.0.1', 'localhost')}/cometd`; // another site, not just another origin
  const post = async (msgs) => (await fetch(`${base}/cometd`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(msgs),
    signal: AbortSignal.timeout(WAIT),
  })).json();
  for (const [label, expected, block] of [
    ['WebSocket', 'websocket', null],
    ['WebSocket dropped', 'cross-origin-long-polling', 'route'],
    ['WebSocket disabled', 'cross-origin-long-polling', 'disable'],
  ]) {
    const name = (what) => `faye in Chromium, cross-site, ${label}: ${what}`;
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT);
    page.on('pageerror', (e) => step(name('no script error'), false, e.message));
    if (block === 'route') {
      await page.routeWebSocket(/\/cometd/, (ws) => ws.close({ code: 1011, reason: 'blocked by the test' }));
    }
    await page.goto(`${site.origin}/faye.html`);
    await page.waitForFunction(() => typeof window.runFaye === 'function');
    const running = page.evaluate(([u, b]) => window.runFaye(u, b), [url, block]);
    // Once the server has confirmed the page's subscription (or the run gave up:
    // runFaye settles fayeSubscribed either way, within its limit), publish from outside.
    await page.waitForFunction(() => window.fayeSubscribed !== undefined);
    const subscribed = await page.evaluate(() => window.fayeSubscribed);
    if (subscribed === true) {
      const [hs] = await post([{ channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['long-polling'] }]);
      const [pub] = await post([{ channel: '/faye/foo', clientId: hs.clientId, data: { text: 'from outside' } }]);
      step(name('the outside publish is accepted'), pub?.successful === true, pub);
      await post([{ channel: '/meta/disconnect', clientId: hs.clientId }]);
    }
    const result = await running;
    step(name('subscribe'), result.subscribe === true, result.subscribe ?? result);
    step(name('transport'), result.transport === expected, result.transport ?? result);
    step(name('publish reply'), result.publish === true, result.publish ?? result);
    step(name('receives its own message and the outside one'),
      result.received.includes('from the page') && result.received.includes('from outside'), result);
    await context.close();
  }
  site.server.close();
}

/** Two tabs of one browser long-polling: one gets the multiple-clients advice, both
 * keep receiving. */
async function tabsScenario() {
  const base = await startServer();
  const context = await browser.newContext();
  const query = '?view=agent&transport=long-polling&user=agent7';
  const tab1 = await appPage(context, base, query);
  await waitConnection(tab1, 'connected');
  const tab2 = await appPage(context, base, query);
  await expectStep('two tabs connected', waitConnection(tab2, 'connected').then(() => true));
  const advised = await expectStep('one tab is told multiple-clients, and shows it',
    Promise.race([tab1, tab2].map((t, i) =>
      t.waitForSelector('#multiple-clients:not([hidden])').then(async () => {
        const text = await t.textContent('#mc-interval');
        return text === '2000 ms' ? i : `tab ${i + 1}: ${text}`;
      }))));
  if (typeof advised === 'number') {
    const other = [tab1, tab2][1 - advised];
    step('the other tab holds its long poll (no advice)',
      (await other.evaluate(() => document.body.dataset.multipleClients)) !== 'true');
  }
  for (const op of ['AddEmail', 'AddChat']) {
    const response = await fetch(`${base}/api/v2/users/agent7/workbins/wb1`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ operationName: op, uri: `.../TAB${op.toUpperCase()}` }),
    });
    const reply = await response.json();
    await expectStep(`both tabs receive ${op}`,
      Promise.all([row(tab1, reply.referenceId), row(tab2, reply.referenceId)]).then(() => true));
  }
  await expectStep('both tabs still connected, over long-polling',
    Promise.all([tab1, tab2].map(async (t) => [await connection(t), await t.textContent('#transport')]))
      .then((s) => s.every(([c, tr]) => c === 'connected' && tr === 'long-polling') || s));
}

/** The README's picture: the page with a few items, and the live view running. */
async function screenshotScenario() {
  const base = await startServer();
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1 });
  // A few more desktops, so the live view has sessions to count.
  for (const user of ['agent2', 'agent3', 'agent4']) {
    await appPage(context, base, `?view=agent&user=${user}&transport=long-polling`);
  }
  const page = await appPage(context, base, '?view=all&user=agent1');
  await waitConnection(page, 'connected');
  // One assignment every other second or so, so that the chart shows the deliveries.
  const polls = () => page.evaluate(() => Number(document.body.dataset.statsPolls ?? 0));
  for (const op of ['AddEmail', 'AddChat', 'AddWorkitem', 'AddEmail', 'AddChat']) {
    const reply = await assign(page, 'agent1', op);
    await row(page, reply.referenceId);
    const now = await polls();
    await page.waitForFunction((n) => Number(document.body.dataset.statsPolls) >= n + 2, now);
  }
  await page.waitForFunction(() => Number(document.body.dataset.statsPolls) >= 14, null, { timeout: 30000 });
  await page.evaluate(() => document.activeElement?.blur());
  await page.screenshot({ path: screenshotPath, fullPage: false });
  step('screenshot written', fs.existsSync(screenshotPath), screenshotPath);
}

// --- the other origin's pages for the CometD and Faye clients -----------------------------

const COMETD_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>cometd-js, another origin</title>
<script type="module" src="/cometd-test.js"></script></head><body>cometd-js</body></html>`;
const COMETD_TEST = `
import { CometD, WebSocketTransport, LongPollingTransport } from '/cometd/cometd.js';
window.runCometd = (url, transport, limit = 10000) => new Promise((resolve) => {
  const result = {};
  const cometd = new CometD();
  cometd.unregisterTransports();
  if (transport === 'websocket') cometd.registerTransport('websocket', new WebSocketTransport());
  else cometd.registerTransport('long-polling', new LongPollingTransport());
  cometd.configure({ url, logLevel: 'warn', maxNetworkDelay: 5000 });
  const timer = setTimeout(() => { cometd.disconnect(); resolve({ ...result, timedOut: true }); }, limit);
  cometd.handshake((hs) => {
    result.handshake = hs.successful === true ? true : (hs.error ?? JSON.stringify(hs.failure ?? hs));
    if (hs.successful !== true) { clearTimeout(timer); cometd.disconnect(); resolve(result); return; }
    try {
    cometd.subscribe('/browser/chat', (m) => {
      result.received = m.data.text;
      cometd.disconnect((d) => { result.disconnect = d.successful === true; clearTimeout(timer); resolve(result); });
    }, (sub) => {
      result.subscribe = sub.successful === true || sub.error;
      cometd.publish('/browser/chat', { text: 'hello over ' + transport }, (p) => {
        result.publish = p.successful === true || p.error;
        result.transport = cometd.getTransport()?.type;
      });
    });
    } catch (e) { result.error = String(e); clearTimeout(timer); resolve(result); }
  });
});
// Two long-polling clients of this page, as two tabs would be: both subscribe; once
// one of them is told multiple-clients, a publish must reach both.
window.runTwo = (url) => new Promise((resolve) => {
  const result = { handshakes: 0, multipleClients: 0, received: 0 };
  const clients = [new CometD(), new CometD()];
  const timer = setTimeout(() => finish('timed out'), 12000);
  function finish(why) {
    clearTimeout(timer);
    if (why) result.error = why;
    clients.forEach((c) => c.disconnect());
    resolve(result);
  }
  let subscribed = 0;
  let published = false;
  const publishOnce = () => {
    if (published || subscribed < 2 || result.multipleClients === 0) return;
    published = true;
    clients[0].publish('/browser/both', { text: 'to both' });
  };
  // One after the other, as tabs open: the second handshake carries the cookie the
  // first one got (two at once would each get a cookie of their own).
  const start = (i) => {
    const c = clients[i];
    c.unregisterTransports();
    c.registerTransport('long-polling', new LongPollingTransport());
    c.configure({ url, logLevel: 'warn', maxNetworkDelay: 5000 });
    let advised = false;
    c.addListener('/meta/connect', (m) => {
      if (!advised && m.advice && m.advice['multiple-clients'] === true) {
        advised = true;
        result.multipleClients += 1;
        publishOnce();
      }
    });
    c.handshake((hs) => {
      if (hs.successful !== true) return finish('handshake ' + i + ' failed: ' + (hs.error ?? 'no reply'));
      result.handshakes += 1;
      c.subscribe('/browser/both', () => {
        result.received += 1;
        if (result.received === 2) finish();
      }, () => {
        subscribed += 1;
        if (i === 0) start(1);
        publishOnce();
      });
    });
  };
  start(0);
});
`;

const FAYE_PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>Faye, another site</title>
<script src="/faye/faye-browser.js"></script><script src="/faye-test.js"></script></head><body>faye</body></html>`;
// runFaye resolves (always, within `limit`) to what happened; window.fayeSubscribed
// settles as soon as the server confirmed the subscription (true), refused it (the
// error), or the run ended without (why).
const FAYE_TEST = `
window.runFaye = (url, noWebSocket, limit = 10000) => new Promise((resolve) => {
  const result = { received: [] };
  let subscribed;
  window.fayeSubscribed = new Promise((res) => { subscribed = res; });
  const client = new Faye.Client(url, { timeout: 20, retry: 1 });
  if (noWebSocket === 'disable') client.disable('websocket');
  const finish = (why) => {
    clearTimeout(timer);
    result.transport = client._dispatcher.connectionType;
    if (why) result.error = why;
    subscribed(why ?? 'finished');
    client.disconnect();
    resolve(result);
  };
  const timer = setTimeout(() => finish('timed out'), limit);
  // Done once both messages arrived and the page's publish was answered: its own
  // message may arrive (on the long poll) before its publish reply (on another
  // request), as any two HTTP exchanges may cross.
  const done = () => {
    if (result.received.length >= 2 && result.publish !== undefined) finish();
  };
  client.subscribe('/faye/foo', (m) => {
    result.received.push(m.text);
    done();
  }).then(() => {
    result.subscribe = true;
    subscribed(true);
    client.publish('/faye/foo', { text: 'from the page' })
      .then(() => { result.publish = true; done(); }, (e) => { result.publish = e.message; done(); });
  }, (e) => { result.subscribe = e.message; finish('subscribe refused'); });
});
`;

/** A tiny static server on its own port: another origin (with `host`, another site),
 * serving the CometD and Faye clients from tests/interop/node_modules (never shipped)
 * and pages that run them. It listens on 127.0.0.1 whatever the host name. */
function pageServer(host = '127.0.0.1') {
  const cometdDir = path.join(here, 'node_modules', 'cometd');
  const fayeBundle = path.join(here, 'node_modules', 'faye', 'client', 'faye-browser.js');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const send = (status, type, body) => {
      res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(body);
    };
    if (url.pathname === '/') return send(200, 'text/html;charset=utf-8', COMETD_PAGE);
    if (url.pathname === '/cometd-test.js') return send(200, 'text/javascript', COMETD_TEST);
    if (url.pathname === '/faye.html') return send(200, 'text/html;charset=utf-8', FAYE_PAGE);
    if (url.pathname === '/faye-test.js') return send(200, 'text/javascript', FAYE_TEST);
    if (url.pathname === '/faye/faye-browser.js') return send(200, 'text/javascript', fs.readFileSync(fayeBundle));
    const m = /^\/cometd\/([A-Za-z0-9]+\.js)$/.exec(url.pathname);
    if (m && fs.existsSync(path.join(cometdDir, m[1]))) {
      return send(200, 'text/javascript', fs.readFileSync(path.join(cometdDir, m[1])));
    }
    send(404, 'text/plain', 'not found\n');
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ server, origin: `http://${host}:${server.address().port}` });
    });
  });
}

// --- main ------------------------------------------------------------------------------------

const scenarios = {
  page: pageScenario,
  cometd: cometdScenario,
  tabs: tabsScenario,
  'cross-site': crossSiteScenario,
  faye: fayeScenario,
  screenshot: screenshotScenario,
};
try {
  if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
  await scenarios[scenario]();
} catch (e) {
  step(`${scenario} ran to the end`, false, String(e.stack ?? e));
}
clearTimeout(deadline);
await browser.close();
say({ done: true, failures });
process.exit(failures === 0 ? 0 : 1);
