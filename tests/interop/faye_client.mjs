// Faye's Node client against a bayeux server: the same flow as the CometD client's,
// without the service-channel step (Faye has no /service semantics).
// Usage: node faye_client.mjs BAYEUX_URL BASE_URL websocket|long-polling
// With `websocket`, Faye's default: it handshakes over long-polling, then switches to
// WebSocket, which our server offers. With `long-polling`, each client disables
// WebSocket (`client.disable('websocket')`). With https:// URLs the same runs over TLS
// (the socket over wss://); Node must trust the server's certificate
// (NODE_EXTRA_CA_CERTS), and the peer's name says `TLS`.
import faye from 'faye';
import { createRequire } from 'node:module';
import { makeReporter, Inbox, basic, assign, deadline } from './report.mjs';

const [url, base, mode] = process.argv.slice(2);
if (mode !== 'websocket' && mode !== 'long-polling') throw new Error(`unknown mode ${mode}`);
const tls = new URL(url).protocol === 'https:' ? ', TLS' : '';
const r = makeReporter(`faye (node client, ${mode}${tls})`);
deadline(30000, r);

// The wire, as each client's transports see it: every message a transport sends and
// every message it receives, tagged with the transport's connection type. Faye's client
// does not expose this, so the two transports' classes are wrapped.
const require = createRequire(import.meta.url);
const WebSocketTransport = require('faye/src/transport/web_socket.js');
const HttpTransport = require('faye/src/transport/node_http.js');
for (const klass of [WebSocketTransport, HttpTransport]) {
  const { request, _receive: receive } = klass.prototype;
  klass.prototype.request = function (messages) {
    const wire = this._dispatcher.wire;
    for (const m of messages) wire && wire.push({ dir: 'out', via: this.connectionType, channel: m.channel, connectionType: m.connectionType });
    return request.apply(this, arguments);
  };
  klass.prototype._receive = function (replies) {
    const wire = this._dispatcher.wire;
    for (const m of [].concat(replies || [])) wire && wire.push({ dir: 'in', via: this.connectionType, channel: m.channel });
    return receive.apply(this, arguments);
  };
}
// And each socket Faye opens, and how it ended: the close code and reason.
const { _createSocket: createSocket } = WebSocketTransport.prototype;
WebSocketTransport.prototype._createSocket = function () {
  const socket = createSocket.apply(this, arguments);
  const wire = this._dispatcher.wire;
  if (socket && wire) {
    wire.push({ dir: 'socket', via: 'websocket' });
    socket.on('close', (e) => wire.push({ dir: 'close', via: 'websocket', code: e.code, reason: e.reason }));
  }
  return socket;
};

const clients = [];
function client(headers) {
  const c = new faye.Client(url, { timeout: 10, retry: 1 });
  if (mode === 'long-polling') c.disable('websocket');
  for (const [k, v] of Object.entries(headers || {})) c.setHeader(k, v);
  c._dispatcher.wire = [];
  c.transportDowns = 0;
  c.on('transport:down', () => { c.transportDowns++; });
  clients.push(c);
  return c;
}
// Faye opens its socket while it handshakes, and uses it from the handshake reply on if
// it is open by then (else it carries on over long-polling until it is). Opening it
// first, as Faye itself does, keeps the steps from depending on which finishes first.
const socketFirst = (c) => (mode === 'websocket'
  ? new Promise((res) => WebSocketTransport.isUsable(c._dispatcher, c._dispatcher.endpointFor('websocket'), res))
  : Promise.resolve(false));
// The connection type in use: the dispatcher's, and its transport's.
const inUse = (c) => [c._dispatcher.connectionType, c._dispatcher._transport && c._dispatcher._transport.connectionType];
// What the wire shows so far: the sockets opened, the transport of the handshake, the
// transports of every message sent after it and received after its reply, and the
// connectionType each /meta/connect named.
const onTheWire = (c) => {
  const w = c._dispatcher.wire;
  const uniq = (xs) => [...new Set(xs)];
  const hs = w.findIndex((e) => e.dir === 'out' && e.channel === '/meta/handshake');
  const hsReply = w.findIndex((e) => e.dir === 'in' && e.channel === '/meta/handshake');
  return {
    sockets: w.filter((e) => e.dir === 'socket').length,
    handshake: hs < 0 ? 'not sent' : w[hs].via,
    sentAfter: uniq(w.slice(hs + 1).filter((e) => e.dir === 'out').map((e) => e.via)),
    receivedAfter: uniq(w.slice(hsReply + 1).filter((e) => e.dir === 'in').map((e) => e.via)),
    connects: uniq(w.filter((e) => e.dir === 'out' && e.channel === '/meta/connect').map((e) => e.connectionType)),
  };
};
const expectedWire = {
  sockets: mode === 'websocket' ? 1 : 0,
  handshake: 'long-polling',
  sentAfter: [mode],
  receivedAfter: [mode],
  connects: [mode],
};

// Resolves once the server confirmed the subscription (Faye handshakes first if needed).
const subscribe = (c, ch, inbox, tag) => new Promise((res) => {
  const sub = c.subscribe(ch).withChannel((channel, data) => inbox.push({ tag, channel, data }));
  sub.then(() => res({ sub, ok: true }), (e) => res({ sub, ok: false, error: e && e.message }));
});
const publish = (c, ch, data) => c.publish(ch, data).then(() => ({ ok: true }), (e) => ({ ok: false, error: e && e.message }));
const pick = (m) => (m.timeout ? 'nothing (timeout)' : { tag: m.tag, channel: m.channel, data: m.data });
const clientId = (c) => new Promise((res) => c.connect(() => res(c._dispatcher.clientId)));

const a = client(), b = client();
const inboxA = new Inbox();
const opened = await Promise.all([a, b].map(socketFirst));
if (mode === 'websocket') r.expectEqual('socket opened', [true, true], opened);
const s1 = await subscribe(a, '/chat/room', inboxA, 'exact');
r.report('handshake and subscribe', s1.ok, 'subscribed', s1.error || 'subscribed');
await clientId(b);
r.expectEqual('transport after the handshake', { a: [mode, mode], b: [mode, mode] }, { a: inUse(a), b: inUse(b) });
const p1 = await publish(b, '/chat/room', { text: 'hello' });
r.report('publish reply', p1.ok, 'successful', p1);
r.expectEqual('receive', { tag: 'exact', channel: '/chat/room', data: { text: 'hello' } }, pick(await inboxA.next()));

await subscribe(a, '/wild/*', inboxA, 'star');
await subscribe(a, '/wild/deep/**', inboxA, 'deep');
await publish(b, '/wild/one', 1);
r.expectEqual('wildcard *', { tag: 'star', channel: '/wild/one', data: 1 }, pick(await inboxA.next()));
await publish(b, '/wild/deep/x/y', 2);
r.expectEqual('wildcard **', { tag: 'deep', channel: '/wild/deep/x/y', data: 2 }, pick(await inboxA.next()));

await subscribe(a, '/batch/seq', inboxA, 'batch');
// Published in one tick: over long-polling Faye sends them in one batch; over WebSocket
// it does not batch (one frame each).
const acks = await Promise.all([1, 2, 3].map((n) => publish(b, '/batch/seq', n)));
const got = [];
for (let i = 0; i < 3; i++) got.push(pick(await inboxA.next()).data);
r.report('batch replies', acks.every((x) => x.ok), 'all successful', acks);
r.expectEqual('batch in order', [1, 2, 3], got);

const s2 = await subscribe(a, '/unsub/x', inboxA, 'unsub');
await publish(b, '/unsub/x', 'before');
r.expectEqual('receive before unsubscribe', 'before', pick(await inboxA.next()).data);
s2.sub.cancel();
// The subscribe below goes out after the unsubscribe on A's own connection, so once it
// is confirmed the server has processed both.
await subscribe(a, '/sentinel/x', inboxA, 'sentinel');
await publish(b, '/unsub/x', 'after');
await publish(b, '/sentinel/x', 'sentinel');
r.expectEqual('unsubscribe stops delivery', { tag: 'sentinel', channel: '/sentinel/x', data: 'sentinel' }, pick(await inboxA.next()));

// Faye's Node client sends its headers on the socket's upgrade request too, so the agent
// uses WebSocket like the others.
const agent = client({ Authorization: basic('faye-agent', 'pw') });
const inboxC = new Inbox();
await socketFirst(agent);
await subscribe(agent, '/v2/me/*', inboxC, 'me');
const post = await assign(base, 'faye-agent', 'AddChat', '.../CH4T1D');
r.report('workbin POST', post.status === 200 && post.body.statusCode === 0, '200 statusCode 0', post);
const n1 = pick(await inboxC.next()), n2 = pick(await inboxC.next());
r.expectEqual('workbin notifications',
  [['/v2/me/workbins', 'WorkbinStateChangeMessage', post.body.referenceId], ['/v2/me/chats', 'ChatStateChangeMessage', post.body.referenceId]],
  [n1, n2].map((n) => [n.channel, n.data && n.data.messageType, n.data && n.data.referenceId]));

r.expectEqual('transport at the end',
  { a: [mode, mode], b: [mode, mode], agent: [mode, mode], transportDowns: [0, 0, 0] },
  { a: inUse(a), b: inUse(b), agent: inUse(agent), transportDowns: clients.map((c) => c.transportDowns) });
r.expectEqual('transport on the wire', [expectedWire, expectedWire, expectedWire], clients.map(onTheWire));

console.log(JSON.stringify({ clientIds: await Promise.all([a, b, agent].map(clientId)) }));
await Promise.all([a, b, agent].map((c) => c.disconnect()));
r.report('disconnect', true, 'sent', 'sent (checked on the server side)');
if (mode === 'websocket') {
  // The server ends the socket after the disconnect reply (Faye closes it too): 1000.
  const closeCode = async (c) => {
    for (let i = 0; i < 100; i++) {
      const e = c._dispatcher.wire.find((x) => x.dir === 'close');
      if (e) return e.code;
      await new Promise((res) => setTimeout(res, 20));
    }
    return 'not closed within 2 s';
  };
  r.expectEqual('socket closed after disconnect', [1000, 1000, 1000], await Promise.all(clients.map(closeCode)));
}
console.log(JSON.stringify({ done: true, failed: r.failed }));
// Let the disconnect requests leave before exiting.
setTimeout(() => process.exit(0), 200);
