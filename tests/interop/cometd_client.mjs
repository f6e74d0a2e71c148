// The official CometD JavaScript client (run in Node by cometd-nodejs-client) against a
// bayeux server. Usage: node cometd_client.mjs BAYEUX_URL BASE_URL long-polling|default
// With `default`, the client's default transports: WebSocket first, which our server
// offers, so the clients use it (except where noted). With https:// URLs the same runs
// over TLS (WebSocket over wss://); Node must trust the server's certificate
// (NODE_EXTRA_CA_CERTS), and the peer's name says `TLS`.
import { adapt } from 'cometd-nodejs-client';
import { CometD, LongPollingTransport, AckExtension } from 'cometd';
import { makeReporter, Inbox, basic, assign, deadline } from './report.mjs';
import { startCutProxy } from './cut_proxy.mjs';

adapt();
const [url, base, mode] = process.argv.slice(2);
const tls = new URL(url).protocol === 'https:' ? ', TLS' : '';
const r = makeReporter(mode === 'default' ? `cometd-js (default transports${tls})` : `cometd-js (long-polling${tls})`);
deadline(30000, r);

// Every publish goes through `publish` below, which tags it with a token in `ext`; this
// extension maps each token to the id the client gave the message, so that each reply
// can be checked against its own request.
const publishIds = new Map();
const publishes = [];
let publishTokens = 0;

function client(headers, options = {}) {
  const c = new CometD();
  c.configure({ url: options.url || url, requestHeaders: headers || {}, logLevel: 'warn', maxNetworkDelay: 5000, ...options.config });
  if (mode !== 'default' || options.longPolling) {
    c.unregisterTransports();
    c.registerTransport('long-polling', new LongPollingTransport());
  }
  c.registerExtension('publish-ids', {
    outgoing(m) {
      const token = m.ext && m.ext.interopPublish;
      if (token !== undefined) publishIds.set(token, m.id);
      return m;
    },
  });
  return c;
}
// Resolves on the first successful /meta/handshake reply, with the number of failed
// handshake replies before it (a transport the server refused shows up there).
const handshake = (c) => new Promise((res) => {
  let failures = 0;
  const l = c.addListener('/meta/handshake', (m) => {
    if (m.successful) { c.removeListener(l); res({ ...m, failuresBefore: failures }); } else failures++;
  });
  c.handshake();
});
const subscribe = (c, ch, inbox, tag) => new Promise((res) => {
  const handle = c.subscribe(ch, (m) => inbox.push({ tag, channel: m.channel, data: m.data }), (reply) => res({ handle, reply }));
});
// Publishes and resolves to the reply (or a timeout after 5 s); every call is recorded
// for the 'publish replies' step.
const publish = (c, ch, data) => new Promise((res) => {
  const token = ++publishTokens;
  const record = { channel: ch, data, requestId: undefined, reply: 'nothing (timeout)' };
  publishes.push(record);
  const timer = setTimeout(() => res(record.reply), 5000);
  c.publish(ch, data, { ext: { interopPublish: token } }, (m) => {
    clearTimeout(timer);
    record.requestId = publishIds.get(token);
    record.reply = m;
    res(m);
  });
});
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
const unsubscribe = (c, h) => new Promise((res) => c.unsubscribe(h, (m) => res(m)));
const disconnect = (c) => new Promise((res) => c.disconnect((m) => res(m)));
const pick = (m) => (m.timeout ? 'nothing (timeout)' : { tag: m.tag, channel: m.channel, data: m.data });

const a = client(), b = client();
const inboxA = new Inbox(), inboxB = new Inbox();
const ha = await handshake(a), hb = await handshake(b);
r.report('handshake', ha.successful && hb.successful, 'successful', { a: ha.successful, b: hb.successful, failedAttemptsBefore: ha.failuresBefore });
const transport = (c) => c.getTransport() && c.getTransport().type;
r.expectEqual('transport',
  { a: mode === 'default' ? 'websocket' : 'long-polling', b: mode === 'default' ? 'websocket' : 'long-polling', failedHandshakes: 0 },
  { a: transport(a), b: transport(b), failedHandshakes: ha.failuresBefore + hb.failuresBefore });

const s1 = await subscribe(a, '/chat/room', inboxA, 'exact');
r.report('subscribe', s1.reply.successful, 'successful', s1.reply);
const p1 = await publish(b, '/chat/room', { text: 'hello' });
r.report('publish reply', p1.successful, 'successful', p1);
r.expectEqual('receive', { tag: 'exact', channel: '/chat/room', data: { text: 'hello' } }, pick(await inboxA.next()));

await subscribe(a, '/wild/*', inboxA, 'star');
await subscribe(a, '/wild/deep/**', inboxA, 'deep');
await publish(b, '/wild/one', 1);
r.expectEqual('wildcard *', { tag: 'star', channel: '/wild/one', data: 1 }, pick(await inboxA.next()));
await publish(b, '/wild/deep/x/y', 2);
r.expectEqual('wildcard **', { tag: 'deep', channel: '/wild/deep/x/y', data: 2 }, pick(await inboxA.next()));

await subscribe(a, '/batch/seq', inboxA, 'batch');
let batchReplies;
b.batch(() => { batchReplies = Promise.all([1, 2, 3].map((n) => publish(b, '/batch/seq', n))); });
const got = [];
for (let i = 0; i < 3; i++) got.push(pick(await inboxA.next()).data);
r.expectEqual('batch in order', [1, 2, 3], got);
const br = await batchReplies;
r.report('batch replies', br.every((m) => m.successful === true), 'all successful', br);

const s2 = await subscribe(a, '/unsub/x', inboxA, 'unsub');
await publish(b, '/unsub/x', 'before');
r.expectEqual('receive before unsubscribe', 'before', pick(await inboxA.next()).data);
const u = await unsubscribe(a, s2.handle);
r.report('unsubscribe reply', u.successful, 'successful', u);
await subscribe(a, '/sentinel/x', inboxA, 'sentinel');
await publish(b, '/unsub/x', 'after');
await publish(b, '/sentinel/x', 'sentinel');
r.expectEqual('unsubscribe stops delivery', { tag: 'sentinel', channel: '/sentinel/x', data: 'sentinel' }, pick(await inboxA.next()));

// Service channel: the server's listener answers the sender alone; subscribers of the
// channel see nothing.
await subscribe(a, '/service/echo', inboxA, 'watcher');
b.addListener('/service/echo', (m) => inboxB.push({ tag: 'echo', channel: m.channel, data: m.data }));
const ps = await publish(b, '/service/echo', { q: 1 });
r.report('service publish reply', ps.successful, 'successful', ps);
r.expectEqual('service answer to sender', { tag: 'echo', channel: '/service/echo', data: { echo: { q: 1 } } }, pick(await inboxB.next()));
await publish(b, '/sentinel/x', 'sentinel2');
r.expectEqual('service message not broadcast', { tag: 'sentinel', channel: '/sentinel/x', data: 'sentinel2' }, pick(await inboxA.next()));

// The agent's credentials travel in an HTTP header, which the CometD client's WebSocket
// transport cannot send (it has no requestHeaders): the agent long-polls in both modes.
const agent = client({ Authorization: basic('interop-agent', 'pw') }, { longPolling: true });
const inboxC = new Inbox();
await handshake(agent);
await subscribe(agent, '/v2/me/*', inboxC, 'me');
const post = await assign(base, 'interop-agent', 'AddEmail', '.../FE7978FEWFE');
r.report('workbin POST', post.status === 200 && post.body.statusCode === 0, '200 statusCode 0', post);
const n1 = pick(await inboxC.next()), n2 = pick(await inboxC.next());
r.expectEqual('workbin notifications',
  [['/v2/me/workbins', 'WorkbinStateChangeMessage', post.body.referenceId], ['/v2/me/emails', 'EmailStateChangeMessage', post.body.referenceId]],
  [n1, n2].map((n) => [n.channel, n.data && n.data.messageType, n.data && n.data.referenceId]));

// CometD's ack extension: the handshake reply says acks are on, every successful connect
// reply carries a batch number, strictly increasing, and messages keep flowing.
// Records ext.ack of each successful /meta/connect reply `c` sees (null when missing).
const recordConnectAcks = (c) => {
  const seen = [];
  c.addListener('/meta/connect', (m) => { if (m.successful) seen.push(m.ext ? m.ext.ack : null); });
  return seen;
};
const increasingBatches = (acks) => acks.length > 0 && acks.every((v, i) => Number.isInteger(v) && (i === 0 || v > acks[i - 1]));
const acked = client();
acked.registerExtension('ack', new AckExtension());
const inboxD = new Inbox();
const connectAcks = recordConnectAcks(acked);
const hd = await handshake(acked);
r.report('ack extension handshake', hd.ext && hd.ext.ack === true, 'ext.ack true', hd.ext);
await subscribe(acked, '/acked/x', inboxD, 'acked');
for (const n of [1, 2, 3]) await publish(b, '/acked/x', n);
const ackedGot = [];
for (let i = 0; i < 3; i++) ackedGot.push(pick(await inboxD.next()).data);
r.expectEqual('ack extension delivery', [1, 2, 3], ackedGot);
// Before the disconnect: the connect reply that ends a session carries no batch.
const ackedBatches = [...connectAcks];
r.report('ack extension batches', increasingBatches(ackedBatches), 'an integer ext.ack on every successful connect reply, strictly increasing', ackedBatches);

// The re-send: a client with the ack extension, long-polling through a proxy that cuts
// the first connect response carrying the sequence from SEQ_CUT_FROM on (the headers and
// half the body, then both sides closed). The server sends what was not acknowledged
// again on the next connect, so the client gets every message once, in order.
const SEQ = Array.from({ length: 10 }, (_, i) => i + 1);
const SEQ_CUT_FROM = 4;
const isSeq = (m) => m.channel === '/acked/seq';
const proxy = await startCutProxy(url, (messages) =>
  messages.some((m) => m.channel === '/meta/connect' && m.successful === true)
  && messages.some((m) => isSeq(m) && typeof m.data === 'number' && m.data >= SEQ_CUT_FROM));
const proxied = client(undefined, { url: proxy.url(new URL(url).pathname), longPolling: true, config: { backoffIncrement: 100 } });
proxied.registerExtension('ack', new AckExtension());
const inboxE = new Inbox();
const proxiedAcks = recordConnectAcks(proxied);
let failedConnects = 0;
proxied.addListener('/meta/connect', (m) => { if (!m.successful) failedConnects++; });
const he = await handshake(proxied);
r.report('ack re-send: handshake through the proxy', he.ext && he.ext.ack === true, 'ext.ack true', he.ext);
await subscribe(proxied, '/acked/seq', inboxE, 'seq');
const seqReplies = [];
for (const n of [...SEQ, 'end']) {
  seqReplies.push(await publish(b, '/acked/seq', n));
  await sleep(20);
}
const seqGot = [];
for (;;) {
  const m = await inboxE.next();
  if (m.timeout) { seqGot.push('nothing (timeout)'); break; }
  seqGot.push(m.data);
  if (m.data === 'end') break;
}
const after = await inboxE.next(300);
if (!after.timeout) seqGot.push(after.data);
r.expectEqual('ack re-send: every message once, in order', [...SEQ, 'end'], seqGot);
r.report('ack re-send: publish replies', seqReplies.every((m) => m.successful === true), 'all successful',
  { total: seqReplies.length, failed: seqReplies.filter((m) => m.successful !== true) });
const cut = proxy.cuts[0];
const cutSeq = cut ? cut.messages.filter(isSeq).map((m) => m.data) : [];
r.report('ack re-send: the proxy cut a connect response',
  proxy.cuts.length === 1 && cutSeq.length > 0 && cut.sentBytes < cut.totalBytes && failedConnects >= 1,
  'exactly 1 cut response, carrying sequence messages, seen by the client as a failed connect',
  { cuts: proxy.cuts.length, sequenceInCut: cutSeq, sentBytes: cut && cut.sentBytes, totalBytes: cut && cut.totalBytes, failedConnects });
// On the wire: the cut batch's number, the batch the next connect acknowledged, and the
// sequence messages of the next response that carried any (they must start with the
// cut ones: the server sent them again).
const cutAt = proxy.log.findIndex((e) => e.dir === 'cut');
const cutBatch = cut && (cut.messages.find((m) => m.channel === '/meta/connect').ext || {}).ack;
const afterCut = cutAt < 0 ? [] : proxy.log.slice(cutAt + 1);
const nextConnect = afterCut.find((e) => e.dir === 'request' && e.message.channel === '/meta/connect');
const nextAck = nextConnect && nextConnect.message.ext ? nextConnect.message.ext.ack : undefined;
const resentSeq = afterCut.filter((e) => e.dir === 'response' && isSeq(e.message)).map((e) => e.message.data).slice(0, cutSeq.length);
r.report('ack re-send: the cut batch is sent again',
  Number.isInteger(cutBatch) && Number.isInteger(nextAck) && nextAck < cutBatch && cutSeq.length > 0 && JSON.stringify(resentSeq) === JSON.stringify(cutSeq),
  { ackBelow: cutBatch, resent: cutSeq },
  { ack: nextAck, resent: resentSeq });
const proxiedBatches = [...proxiedAcks];
r.report('ack re-send: batches', increasingBatches(proxiedBatches), 'an integer ext.ack on every successful connect reply, strictly increasing', proxiedBatches);

const badReply = (p) => !(p.reply.successful === true && p.requestId !== undefined && p.reply.id === p.requestId && p.reply.channel === p.channel);
r.report('publish replies', publishes.length > 0 && !publishes.some(badReply),
  "each publish reply successful, with its request's id and channel",
  { total: publishes.length, failed: publishes.filter(badReply) });

console.log(JSON.stringify({ clientIds: [a, b, agent, acked, proxied].map((c) => c.getClientId()) }));
const d = await Promise.all([a, b, agent, acked, proxied].map(disconnect));
proxy.close();
r.report('disconnect', d.every((m) => m.successful), 'successful', d);
console.log(JSON.stringify({ done: true, failed: r.failed }));
process.exit(0);
