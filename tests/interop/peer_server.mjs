// A real Bayeux server for our client to talk to. Prints "ready" once listening.
// Usage: node peer_server.mjs faye|cometd PORT [TIMEOUT_MS]  (long-poll timeout, default 5000)
import http from 'node:http';
import faye from 'faye';
import cometdServer from 'cometd-nodejs-server';

const [kind, port] = [process.argv[2], Number(process.argv[3])];
const timeoutMs = Number(process.argv[4] || 5000);
const server = http.createServer();
if (kind === 'faye') {
  // Faye's timeout is in seconds.
  new faye.NodeAdapter({ mount: '/cometd', timeout: timeoutMs / 1000 }).attach(server);
} else {
  const cometd = cometdServer.createCometDServer({ timeout: timeoutMs });
  server.on('request', (req, res) => cometd.handle(req, res));
}
server.listen(port, '127.0.0.1', () => console.log('ready'));
