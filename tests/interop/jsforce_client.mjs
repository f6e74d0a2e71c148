// jsforce's streaming client (Salesforce's Node library, 3.10.x) against a bayeux server
// with /topic/** durable at Salesforce's path (INSTANCE_URL/cometd/45.0), run unchanged:
// a Connection with a local instance URL and token, its Streaming API and its Replay
// extension, long-polling only as jsforce sets it up for Salesforce.
// Usage: node jsforce_client.mjs INSTANCE_URL
import jsforce from 'jsforce';
import { createRequire } from 'node:module';
import { makeReporter, Inbox, deadline } from './report.mjs';

const require = createRequire(import.meta.url);
const { StreamingExtension } = require('jsforce/lib/api/streaming');

const [instance] = process.argv.slice(2);
const CHANNEL = '/topic/orders';
const r = makeReporter('jsforce');
deadline(45000, r);

const conn = new jsforce.Connection({ instanceUrl: instance, accessToken: 'local-token', version: '45.0' });

// Publishes orders over long-polling as another client would (jsforce only subscribes).
async function publish(numbers) {
  const url = `${instance}/cometd/45.0`;
  const post = async (messages) => (await fetch(url, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(messages),
  })).json();
  const [hs] = await post([{ channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['long-polling'] }]);
  for (const n of numbers) {
    const [reply] = await post([{ channel: CHANNEL, clientId: hs.clientId, data: { order: n } }]);
    if (!reply.successful) throw new Error(`publish refused: ${JSON.stringify(reply)}`);
  }
  await post([{ channel: '/meta/disconnect', clientId: hs.clientId }]);
}

// A streaming client with the Replay extension from `replayId`; resolves once the
// server confirmed the subscription.
async function subscribe(replayId, inbox) {
  const replay = new StreamingExtension.Replay(CHANNEL, replayId);
  const client = conn.streaming.createClient([replay]);
  const subscription = client.subscribe(CHANNEL, (data) => inbox.push(data));
  await subscription;
  return { client, replay };
}

async function take(inbox, n) {
  const got = [];
  while (got.length < n) {
    const m = await inbox.next(10000);
    if (m.timeout) break;
    got.push(m);
  }
  return got;
}

const orders = (events) => events.map((e) => e.order);

try {
  // Live: a subscriber from -1 gets new events with their replay ids and dates; the
  // extension tracks the last id.
  const live = new Inbox();
  const a = await subscribe(-1, live);
  await publish([1, 2, 3]);
  const first = await take(live, 3);
  r.expectEqual('live events in order', [1, 2, 3], orders(first));
  r.report('each carries event.replayId and event.createdDate',
    first.every((e) => Number.isInteger(e.event?.replayId) && typeof e.event?.createdDate === 'string'),
    true, first.map((e) => e.event));
  const last = first[2]?.event?.replayId;
  r.expectEqual('the extension tracked the last replay id', last, a.replay._replay);
  a.client.disconnect();

  // Away, then back from the last id: exactly what it missed, then live.
  await publish([4, 5]);
  const resumed = new Inbox();
  const b = await subscribe(last, resumed);
  r.expectEqual('replays what it missed after its last id', [4, 5], orders(await take(resumed, 2)));
  await publish([6]);
  r.expectEqual('then live', [6], orders(await take(resumed, 1)));
  b.client.disconnect();

  // Everything retained (-2).
  const all = new Inbox();
  const c = await subscribe(-2, all);
  r.expectEqual('replays all retained events (-2)', [1, 2, 3, 4, 5, 6], orders(await take(all, 6)));
  c.client.disconnect();
} catch (e) {
  r.report('ran to the end', false, 'no exception', String(e?.stack ?? e));
}
console.log(JSON.stringify({ done: true, failed: r.failed }));
process.exit(r.failed ? 1 : 0);
