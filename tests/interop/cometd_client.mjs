// The official CometD JavaScript client (run in Node by cometd-nodejs-client) against a
// bayeux server. Usage: node cometd_client.mjs BAYEUX_URL BASE_URL long-polling|default
import { adapt } from 'cometd-nodejs-client';
import { CometD, LongPollingTransport, AckExtension } from 'cometd';
import { makeReporter, Inbox, basic, assign, deadline } from './report.mjs';

adapt();
const [url, base, mode] = process.argv.slice(2);
const r = makeReporter(mode === 'default' ? 'cometd-js (default transports)' : 'cometd-js (long-polling)');
deadline(30000, r);

function client(headers) {
  const c = new CometD();
  c.configure({ url, requestHeaders: headers || {}, logLevel: 'warn', maxNetworkDelay: 5000 });
  if (mode !== 'default') {
    c.unregisterTransports();
    c.registerTransport('long-polling', new LongPollingTransport());
  }
  return c;
}
// Resolves on the first successful /meta/handshake reply. With the default transports the
// client tries WebSocket first; our server answers that upgrade with 405, and the client
// falls back to long-polling and handshakes again by itself.
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
const publish = (c, ch, data) => new Promise((res) => c.publish(ch, data, (m) => res(m)));
const unsubscribe = (c, h) => new Promise((res) => c.unsubscribe(h, (m) => res(m)));
const disconnect = (c) => new Promise((res) => c.disconnect((m) => res(m)));
const pick = (m) => (m.timeout ? 'nothing (timeout)' : { tag: m.tag, channel: m.channel, data: m.data });

const a = client(), b = client();
const inboxA = new Inbox(), inboxB = new Inbox();
const ha = await handshake(a), hb = await handshake(b);
r.report('handshake', ha.successful && hb.successful, 'successful', { a: ha.successful, b: hb.successful, failedAttemptsBefore: ha.failuresBefore });
r.expectEqual('transport', 'long-polling', a.getTransport() && a.getTransport().type);

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
const acks = [];
b.batch(() => { for (const n of [1, 2, 3]) b.publish('/batch/seq', n, (m) => acks.push(m.successful)); });
const got = [];
for (let i = 0; i < 3; i++) got.push(pick(await inboxA.next()).data);
r.expectEqual('batch in order', [1, 2, 3], got);

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

const agent = client({ Authorization: basic('interop-agent', 'pw') });
const inboxC = new Inbox();
await handshake(agent);
await subscribe(agent, '/v2/me/*', inboxC, 'me');
const post = await assign(base, 'interop-agent', 'AddEmail', '.../FE7978FEWFE');
r.report('workbin POST', post.status === 200 && post.body.statusCode === 0, '200 statusCode 0', post);
const n1 = pick(await inboxC.next()), n2 = pick(await inboxC.next());
r.expectEqual('workbin notifications',
  [['/v2/me/workbins', 'WorkbinStateChangeMessage', post.body.referenceId], ['/v2/me/emails', 'EmailStateChangeMessage', post.body.referenceId]],
  [n1, n2].map((n) => [n.channel, n.data && n.data.messageType, n.data && n.data.referenceId]));

// CometD's ack extension: the handshake reply says acks are on, connect replies carry
// batch numbers, and messages keep flowing.
const acked = client();
acked.registerExtension('ack', new AckExtension());
const inboxD = new Inbox();
const connectAcks = [];
acked.addListener('/meta/connect', (m) => { if (m.ext && typeof m.ext.ack === 'number') connectAcks.push(m.ext.ack); });
const hd = await handshake(acked);
r.report('ack extension handshake', hd.ext && hd.ext.ack === true, 'ext.ack true', hd.ext);
await subscribe(acked, '/acked/x', inboxD, 'acked');
for (const n of [1, 2, 3]) await publish(b, '/acked/x', n);
const ackedGot = [];
for (let i = 0; i < 3; i++) ackedGot.push(pick(await inboxD.next()).data);
r.expectEqual('ack extension delivery', [1, 2, 3], ackedGot);
r.report('ack extension batches', connectAcks.length > 0 && connectAcks.every((v, i) => i === 0 || v > connectAcks[i - 1]), 'increasing ext.ack on connect replies', connectAcks);

console.log(JSON.stringify({ clientIds: [a.getClientId(), b.getClientId(), agent.getClientId(), acked.getClientId()] }));
const d = await Promise.all([disconnect(a), disconnect(b), disconnect(agent), disconnect(acked)]);
r.report('disconnect', d.every((m) => m.successful), 'successful', d);
console.log(JSON.stringify({ done: true, failed: r.failed }));
process.exit(0);
