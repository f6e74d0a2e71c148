// The official CometD JavaScript client with a small replay extension written here from
// Salesforce's published wire format (not from our client): `ext.replay: true` on the
// handshake, `ext.replay: {channel: replayId}` on each subscribe once the server said it
// replays, the last `data.event.replayId` seen kept per channel. Run against a server
// whose `/v2/**` channels are durable.
// Usage: node cometd_replay_client.mjs BAYEUX_URL BASE_URL long-polling|default
import { adapt } from 'cometd-nodejs-client';
import { CometD, LongPollingTransport } from 'cometd';
import { makeReporter, Inbox, basic, assign, deadline } from './report.mjs';

adapt();
const [url, base, mode] = process.argv.slice(2);
const r = makeReporter(mode === 'default' ? 'cometd-js replay (default transports)' : 'cometd-js replay (long-polling)');
deadline(30000, r);

const CHANNEL = '/v2/me/emails';
const USER = 'replayer';

// Salesforce's replay extension, as its clients (EMP-Connector, jsforce) implement it.
class ReplayExtension {
  constructor() {
    this.ids = {};
    this.serverSupports = false;
  }
  setReplayId(channel, id) { this.ids[channel] = id; }
  outgoing(m) {
    if (m.channel === '/meta/handshake') {
      m.ext = { ...(m.ext || {}), replay: true };
    } else if (m.channel === '/meta/subscribe' && this.serverSupports) {
      m.ext = { ...(m.ext || {}), replay: { ...this.ids } };
    }
    return m;
  }
  incoming(m) {
    if (m.channel === '/meta/handshake') {
      this.serverSupports = !!(m.successful && m.ext && m.ext.replay === true);
    } else if (!m.channel.startsWith('/meta/') && m.data && m.data.event && Number.isInteger(m.data.event.replayId)) {
      this.ids[m.channel] = m.data.event.replayId;
    }
    return m;
  }
}

function client(replay) {
  const c = new CometD();
  c.configure({ url, requestHeaders: { Authorization: basic(USER, 'pw') }, logLevel: 'warn', maxNetworkDelay: 5000 });
  if (mode !== 'default') {
    c.unregisterTransports();
    c.registerTransport('long-polling', new LongPollingTransport());
  }
  // The CometD client's WebSocket transport sends no request headers, so the user also
  // goes in the handshake's ext.userId (the server trusts it, as --trust-ext-user-id).
  c.registerExtension('user', {
    outgoing(m) {
      if (m.channel === '/meta/handshake') m.ext = { ...(m.ext || {}), userId: USER };
      return m;
    },
  });
  if (replay) c.registerExtension('replay', replay);
  return c;
}
const handshake = (c) => new Promise((res) => {
  const l = c.addListener('/meta/handshake', (m) => { c.removeListener(l); res(m); });
  c.handshake();
});
const subscribe = (c, ch, inbox) => new Promise((res) => {
  c.subscribe(ch, (m) => inbox.push(m), (reply) => res(reply));
});
const disconnect = (c) => new Promise((res) => c.disconnect((m) => res(m)));
const email = (m) => (m.timeout ? 'nothing (timeout)' : { ref: m.data.referenceId, replayId: m.data.event && m.data.event.replayId });
const increasing = (ids) => ids.every((id, i) => Number.isInteger(id) && (i === 0 || id > ids[i - 1]));

// Three notifications before anyone listens.
const refs = [];
for (const n of [1, 2, 3]) refs.push((await assign(base, USER, 'AddEmail', `.../replay-${n}`)).body.referenceId);

// Everything retained (-2), then live.
const extA = new ReplayExtension();
const a = client(extA);
const inboxA = new Inbox();
const ha = await handshake(a);
r.expectEqual('replay handshake', { successful: true, replay: true }, { successful: ha.successful, replay: ha.ext && ha.ext.replay });
extA.setReplayId(CHANNEL, -2);
const sa = await subscribe(a, CHANNEL, inboxA);
const history = [await inboxA.next(), await inboxA.next(), await inboxA.next()].map(email);
r.report('replay -2: history in order with replay ids',
  sa.successful && JSON.stringify(history.map((h) => h.ref)) === JSON.stringify(refs) && increasing(history.map((h) => h.replayId)),
  { subscribe: true, refs, replayIds: 'integers, increasing' },
  { subscribe: sa.successful, history });
refs.push((await assign(base, USER, 'AddEmail', '.../replay-4')).body.referenceId);
const live = email(await inboxA.next());
r.report('replay -2: then live', live.ref === refs[3] && live.replayId > history[2].replayId,
  { ref: refs[3], replayId: `> ${history[2].replayId}` }, live);
r.expectEqual('extension tracked the last replay id', live.replayId, extA.ids[CHANNEL]);

// From the second one's id: the third and the fourth.
const extB = new ReplayExtension();
const b = client(extB);
const inboxB = new Inbox();
await handshake(b);
extB.setReplayId(CHANNEL, history[1].replayId);
const sb = await subscribe(b, CHANNEL, inboxB);
const fromSecond = [await inboxB.next(), await inboxB.next()].map((m) => email(m).ref);
r.expectEqual('replay after an id', { subscribe: true, refs: [refs[2], refs[3]] }, { subscribe: sb.successful, refs: fromSecond });

// No extension: live messages only, as before.
const c = client(null);
const inboxC = new Inbox();
await handshake(c);
const sc = await subscribe(c, CHANNEL, inboxC);
refs.push((await assign(base, USER, 'AddEmail', '.../replay-5')).body.referenceId);
const first = email(await inboxC.next());
r.expectEqual('no replay extension: live only', { subscribe: true, ref: refs[4] }, { subscribe: sc.successful, ref: first.ref });

// An id the server never assigned: Salesforce's 400.
const extD = new ReplayExtension();
const d = client(extD);
await handshake(d);
extD.setReplayId(CHANNEL, live.replayId + 1000);
const sd = await subscribe(d, CHANNEL, new Inbox());
r.report('unknown replay id refused',
  sd.successful === false && typeof sd.error === 'string' && sd.error.startsWith('400:') && sd.error.includes(`The replayId {${live.replayId + 1000}} you provided was invalid`),
  "400 'The replayId {N} you provided was invalid ...'", { successful: sd.successful, error: sd.error });

console.log(JSON.stringify({ clientIds: [a, b, c, d].map((x) => x.getClientId()) }));
const bye = await Promise.all([a, b, c, d].map(disconnect));
r.report('disconnect', bye.every((m) => m.successful), 'successful', bye.map((m) => m.successful));
console.log(JSON.stringify({ done: true, failed: r.failed }));
process.exit(0);
