// Step reporting shared by the peer scripts: one JSON line per step on stdout, read by
// tests/interop.rs, which fails with the peer, the step, and expected against got.
export function makeReporter(peer) {
  let failed = false;
  const report = (step, ok, expected, got) => {
    if (!ok) failed = true;
    console.log(JSON.stringify({ peer, step, ok: !!ok, expected, got }));
  };
  return {
    report,
    // Reports equality of two JSON-able values.
    expectEqual(step, expected, got) {
      report(step, JSON.stringify(expected) === JSON.stringify(got), expected, got);
    },
    get failed() { return failed; },
  };
}

// Received messages in arrival order, with a bounded wait for the next one.
export class Inbox {
  constructor() { this.items = []; this.waiters = []; }
  push(item) {
    const w = this.waiters.shift();
    if (w) w(item); else this.items.push(item);
  }
  next(ms = 5000) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve({ timeout: true });
      }, ms);
      const done = (item) => { clearTimeout(timer); resolve(item); };
      this.waiters.push(done);
    });
  }
}

export function basic(user, password) {
  return 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');
}

// The supervisor's POST to the workbin API.
export async function assign(base, user, op, uri) {
  const res = await fetch(`${base}/api/v2/users/${user}/workbins/wb1`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ operationName: op, uri }),
  });
  return { status: res.status, body: await res.json() };
}

// Ends the process if the whole script takes longer than `ms`.
export function deadline(ms, reporter) {
  setTimeout(() => {
    reporter.report('deadline', false, `finished within ${ms} ms`, 'still running');
    process.exit(2);
  }, ms).unref();
}
