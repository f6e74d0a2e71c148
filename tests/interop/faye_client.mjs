// Faye's Node client against a bayeux server: the same flow as the CometD client's,
// without the service-channel step (Faye has no /service semantics).
// Usage: node faye_client.mjs BAYEUX_URL BASE_URL
import faye from 'faye';
import { makeReporter, Inbox, basic, assign, deadline } from './report.mjs';

const [url, base] = process.argv.slice(2);
const r = makeReporter('faye (node client)');
deadline(30000, r);

function client(headers) {
  const c = new faye.Client(url, { timeout: 10, retry: 1 });
  for (const [k, v] of Object.entries(headers || {})) c.setHeader(k, v);
  return c;
}
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
const s1 = await subscribe(a, '/chat/room', inboxA, 'exact');
r.report('handshake and subscribe', s1.ok, 'subscribed', s1.error || 'subscribed');
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
// Published in one tick: Faye sends them in one batch.
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

const agent = client({ Authorization: basic('faye-agent', 'pw') });
const inboxC = new Inbox();
await subscribe(agent, '/v2/me/*', inboxC, 'me');
const post = await assign(base, 'faye-agent', 'AddChat', '.../CH4T1D');
r.report('workbin POST', post.status === 200 && post.body.statusCode === 0, '200 statusCode 0', post);
const n1 = pick(await inboxC.next()), n2 = pick(await inboxC.next());
r.expectEqual('workbin notifications',
  [['/v2/me/workbins', 'WorkbinStateChangeMessage', post.body.referenceId], ['/v2/me/chats', 'ChatStateChangeMessage', post.body.referenceId]],
  [n1, n2].map((n) => [n.channel, n.data && n.data.messageType, n.data && n.data.referenceId]));

console.log(JSON.stringify({ clientIds: await Promise.all([a, b, agent].map(clientId)) }));
await Promise.all([a, b, agent].map((c) => c.disconnect()));
r.report('disconnect', true, 'sent', 'sent (checked on the server side)');
console.log(JSON.stringify({ done: true, failed: r.failed }));
// Let the disconnect requests leave before exiting.
setTimeout(() => process.exit(0), 200);
