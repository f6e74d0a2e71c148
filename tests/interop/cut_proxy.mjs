// A small HTTP/1.1 proxy on 127.0.0.1 for the ack-extension step: each client connection
// gets its own connection to the target server (TLS when the target is https://; the
// clients always speak plain HTTP to the proxy); requests are forwarded as they come,
// responses are framed (Content-Length or chunked) and forwarded whole, except that the
// first response `shouldCut(body)` picks is cut: its headers and half of its body are
// written, then both sides are closed. Every Bayeux message seen in a request or a
// response is recorded in `log`, in the order the proxy saw them.
import net from 'node:net';
import tls from 'node:tls';

// Parses one HTTP/1.1 message at the start of `buf`: null while incomplete, or
// { head, body, length } where `head` is the header block (with its blank line), `body`
// the decoded body and `length` the message's bytes in `buf`.
function parseMessage(buf, isResponse) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const headLength = end + 4;
  const head = buf.subarray(0, headLength);
  const lines = head.toString('latin1').split('\r\n');
  const headers = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const status = isResponse ? Number(lines[0].split(' ')[1]) : 0;
  if (isResponse && (status < 200 || status === 204 || status === 304)) {
    return { head, body: Buffer.alloc(0), length: headLength };
  }
  if (/chunked/i.test(headers['transfer-encoding'] || '')) {
    const chunks = [];
    let at = headLength;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', at);
      if (lineEnd < 0) return null;
      const size = parseInt(buf.subarray(at, lineEnd).toString('latin1'), 16);
      if (Number.isNaN(size)) throw new Error('cut_proxy: bad chunk size');
      if (size === 0) {
        // No trailers from either peer: the last chunk ends with one more CRLF.
        if (buf.length < lineEnd + 4) return null;
        return { head, body: Buffer.concat(chunks), length: lineEnd + 4 };
      }
      if (buf.length < lineEnd + 2 + size + 2) return null;
      chunks.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
  }
  if (isResponse && headers['content-length'] === undefined) {
    // Delimited by the end of the connection: forwarded as it comes.
    return { head, body: null, length: buf.length, untilClose: true };
  }
  const length = Number(headers['content-length'] || 0);
  if (buf.length < headLength + length) return null;
  return { head, body: buf.subarray(headLength, headLength + length), length: headLength + length };
}

// The Bayeux messages of a body, or [] when it is not a JSON array of them.
function bayeuxMessages(body) {
  try {
    const v = JSON.parse(body.toString('utf8'));
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

// Starts the proxy in front of `target` (an http:// or https://127.0.0.1:PORT URL).
// Resolves to { url(path), cuts, log, close() } once it listens; `cuts` lists each cut
// response as { messages, sentBytes, totalBytes }.
export async function startCutProxy(target, shouldCut) {
  const { protocol, hostname, port } = new URL(target);
  if (hostname !== '127.0.0.1') throw new Error(`cut_proxy: loopback only, not ${hostname}`);
  const cuts = [];
  const log = [];
  const sockets = new Set();
  const track = (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); return s; };

  const server = net.createServer((client) => {
    track(client);
    // Over TLS the certificate is checked as any client would (against 127.0.0.1, with
    // Node's default store and NODE_EXTRA_CA_CERTS); no ALPN, so HTTP/1.1.
    const upstream = track(protocol === 'https:'
      ? tls.connect({ host: '127.0.0.1', port: Number(port) })
      : net.connect(Number(port), '127.0.0.1'));
    let requests = Buffer.alloc(0);
    let responses = Buffer.alloc(0);
    let passthrough = false;
    const closeBoth = () => { client.destroy(); upstream.destroy(); };
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => { if (!client.destroyed) client.end(); });

    client.on('data', (chunk) => {
      upstream.write(chunk);
      requests = Buffer.concat([requests, chunk]);
      for (let m; (m = parseMessage(requests, false)); ) {
        requests = requests.subarray(m.length);
        for (const message of bayeuxMessages(m.body)) log.push({ dir: 'request', message });
      }
    });
    upstream.on('data', (chunk) => {
      if (passthrough) {
        client.write(chunk);
        return;
      }
      responses = Buffer.concat([responses, chunk]);
      for (let m; (m = parseMessage(responses, true)); ) {
        const raw = responses.subarray(0, m.length);
        responses = responses.subarray(m.length);
        if (m.untilClose) {
          passthrough = true;
          client.write(raw);
          return;
        }
        const messages = bayeuxMessages(m.body);
        if (cuts.length === 0 && shouldCut(messages)) {
          // Headers and the first half of the body, then FIN (so the half does arrive)
          // and the upstream connection dropped; the client's socket goes with it.
          const sent = m.head.length + Math.floor((m.length - m.head.length) / 2);
          cuts.push({ messages, sentBytes: sent, totalBytes: m.length });
          log.push({ dir: 'cut', messages });
          client.end(raw.subarray(0, sent));
          upstream.destroy();
          setTimeout(closeBoth, 1000).unref();
          return;
        }
        for (const message of messages) log.push({ dir: 'response', message });
        client.write(raw);
      }
    });
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    url: (path) => base + path,
    cuts,
    log,
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
