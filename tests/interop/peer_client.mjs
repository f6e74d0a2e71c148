// The peer's own client, to publish to or receive from our client through the peer's
// server. Usage:
//   node peer_client.mjs faye|cometd URL publish CHANNEL JSON
//   node peer_client.mjs faye|cometd URL receive CHANNEL COUNT   (prints "subscribed", then each data as JSON)
import faye from 'faye';
import { adapt } from 'cometd-nodejs-client';
import { CometD, LongPollingTransport } from 'cometd';

adapt();
const [kind, url, action, channel, arg] = process.argv.slice(2);
setTimeout(() => { console.error('peer_client: timed out'); process.exit(2); }, 20000).unref();

function fayeClient() {
  const c = new faye.Client(url, { timeout: 10 });
  return {
    publish: (ch, data) => c.publish(ch, data),
    subscribe: (ch, cb) => c.subscribe(ch, cb),
    close: () => c.disconnect(),
  };
}
function cometdClient() {
  const c = new CometD();
  c.configure({ url, logLevel: 'warn' });
  c.unregisterTransports();
  c.registerTransport('long-polling', new LongPollingTransport());
  const ready = new Promise((res, rej) => c.handshake((m) => (m.successful ? res() : rej(new Error(m.error)))));
  return {
    publish: (ch, data) => ready.then(() => new Promise((res, rej) => c.publish(ch, data, (m) => (m.successful ? res() : rej(new Error(m.error)))))),
    subscribe: (ch, cb) => ready.then(() => new Promise((res, rej) => c.subscribe(ch, (m) => cb(m.data), (m) => (m.successful ? res() : rej(new Error(m.error)))))),
    close: () => new Promise((res) => c.disconnect(() => res())),
  };
}
const client = kind === 'faye' ? fayeClient() : cometdClient();

if (action === 'publish') {
  await client.publish(channel, JSON.parse(arg));
  console.log('published');
  await client.close();
  setTimeout(() => process.exit(0), 100);
} else {
  let left = Number(arg);
  await client.subscribe(channel, (data) => {
    console.log(JSON.stringify(data));
    if (--left === 0) { Promise.resolve(client.close()).then(() => setTimeout(() => process.exit(0), 100)); }
  });
  console.log('subscribed');
}
