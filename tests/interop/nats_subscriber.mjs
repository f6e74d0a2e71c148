// The official CometD JavaScript client (in Node, through cometd-nodejs-client) as a
// subscriber of one node of a NATS cluster of bayeux servers (tests/nats.rs).
// Usage: node nats_subscriber.mjs BAYEUX_URL CHANNEL EXPECTED [DEADLINE_MS]
// Prints `ready` once subscribed, then one JSON line when EXPECTED messages arrived (or
// after 60 s): how many arrived, how many twice, and how many out of order, per
// publisher (the data's `p` and `n`: publisher and its sequence number).
import { adapt } from 'cometd-nodejs-client';
import { CometD } from 'cometd';

adapt();
const [url, channel, expectedText] = process.argv.slice(2);
const expected = Number(expectedText);
const cometd = new CometD();
cometd.configure({ url, logLevel: 'warn', maxNetworkDelay: 10000 });

const last = new Map();
let received = 0;
let duplicates = 0;
let disorder = 0;
let finished = false;

function finish() {
  if (finished) return;
  finished = true;
  console.log(JSON.stringify({ received, duplicates, disorder }));
  cometd.disconnect(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000);
}
setTimeout(finish, Number(process.argv[5] || 60000));

cometd.handshake((reply) => {
  if (!reply.successful) {
    console.log(JSON.stringify({ error: 'handshake', reply }));
    process.exit(1);
  }
  cometd.subscribe(channel, (message) => {
    const { p, n } = message.data;
    received += 1;
    const before = last.has(p) ? last.get(p) : -1;
    if (n <= before) duplicates += 1;
    else if (n !== before + 1) disorder += 1;
    if (n > before) last.set(p, n);
    if (received >= expected) finish();
  }, (subscribed) => {
    if (subscribed.successful) console.log('ready');
    else {
      console.log(JSON.stringify({ error: 'subscribe', reply: subscribed }));
      process.exit(1);
    }
  });
});
