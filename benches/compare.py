#!/usr/bin/env python3
"""Side-by-side load comparison: bayeux vs Faye's and CometD's Node servers.

Starts each server on loopback, runs the same `bayeux bench` scenarios against each,
alternating servers within every round, and writes BENCHMARKS-results.json, a table of
medians and ratios (printed, and pasted into BENCHMARKS.md by hand) and
benches/scaling.svg (throughput and p99 latency against subscriber count).

With `--client node` the fan-out and latency scenarios (long-polling against all three
servers, WebSocket against bayeux and Faye) are driven by `node benches/node_load.mjs`
instead: subscribers that cost what real Node clients cost (JSON.parse of every response,
a keep-alive connection or a `ws` socket each), so the load generator, not the server,
may be the bottleneck: the client-bound picture beside `bayeux bench`'s server-bound one.
Its results go to BENCHMARKS-results-node.json and BENCHMARKS-table-node.md (no sweep,
no SVG); the default files are left alone.

Usage: python3 benches/compare.py [--rounds N] [--quick] [--only TEXT] [--client bayeux|node]
Needs: cargo, node and npm (the Node servers are installed here with `npm ci`, unless
tests/interop/node_modules is already up to date with its package-lock.json).
Only standard-library Python.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "bayeux")
NODE_LOAD = os.path.join(ROOT, "benches", "node_load.mjs")
INTEROP = os.path.join(ROOT, "tests", "interop")
SERVERS = ["bayeux", "faye", "cometd-node"]
WS_SERVERS = ["bayeux", "faye"]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


# The load tool talks from a few loopback addresses with thousands of sessions each:
# the per-address budgets meant for the internet would refuse it, so a benchmark lifts
# them (and the total ones with them).
LOAD_BUDGETS = [
    "--max-connections", "200000",
    "--max-connections-per-address", "200000",
    "--max-sessions-per-address", "200000",
    "--max-pending-websockets-per-address", "200000",
    "--max-body-bytes-per-address", str(256 << 20),
    "--max-queued-bytes", str(8 << 30),
]


def start(server, port):
    if server == "bayeux":
        # Queues large enough that a flat-out run measures throughput, not drops.
        cmd = [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--max-queue", "100000",
               "--max-queue-bytes", str(256 << 20)] + LOAD_BUDGETS
    else:
        kind = "faye" if server == "faye" else "cometd"
        cmd = ["node", os.path.join(INTEROP, "peer_server.mjs"), kind, str(port), "30000"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=INTEROP)
    wait_port(port)
    return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bench(server, args, client="bayeux"):
    """Runs one scenario against a fresh server with the given load generator (`bayeux
    bench`, or benches/node_load.mjs); returns the report plus server figures."""
    port = free_port()
    proc = start(server, port)
    try:
        time.sleep(0.3)
        base_rss = rss_kib(proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        url = f"http://127.0.0.1:{port}/cometd"
        if client == "node":
            cmd = ["node", NODE_LOAD, url, "--json"] + args
        else:
            cmd = [BIN, "bench", url, "--json"] + args
        b = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak = base_rss
        tool_peak = 0
        while b.poll() is None:
            peak = max(peak, rss_kib(proc.pid))
            try:
                tool_peak = max(tool_peak, rss_kib(b.pid))
            except OSError:
                pass
            time.sleep(0.2)
        out = b.stdout.read()
        cpu = cpu_seconds(proc.pid) - cpu0
        report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": "no report"}
        report["client"] = client
        report["tool_rss_kib_peak"] = tool_peak
        report["server_cpu_seconds"] = cpu
        report["server_rss_kib_peak"] = peak
        report["server_rss_kib_base"] = base_rss
        d = report.get("delivered", 0)
        report["server_cpu_us_per_delivery"] = cpu * 1e6 / d if d else None
        tool_cpu = report.get("tool_cpu_seconds")
        report["tool_cpu_us_per_delivery"] = tool_cpu * 1e6 / d if d and tool_cpu is not None else None
        return report
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# The scenarios benches/node_load.mjs runs with `--client node`.
NODE_SCENARIOS = ("fanout: ", "latency: ", "websocket fanout: ", "websocket latency: ")


def scenarios(quick, client="bayeux"):
    all_scenarios = default_scenarios(quick)
    if client == "node":
        return {k: v for k, v in all_scenarios.items() if k.startswith(NODE_SCENARIOS)}
    return all_scenarios


def default_scenarios(quick):
    d = "3" if quick else "10"
    return {
        "fanout: 1 channel x 1000 subscribers, max rate": (SERVERS, ["--subscribers", "1000", "--channels", "1", "--publishers", "4", "--batch", "10", "--duration", d]),
        "latency: 1000 subscribers at 10 000 deliveries/s": (SERVERS, ["--subscribers", "1000", "--channels", "1", "--publishers", "1", "--rate", "10", "--duration", d]),
        "channels: 1000 channels x 10 subscribers, max rate": (SERVERS, ["--subscribers", "10000", "--channels", "1000", "--publishers", "4", "--batch", "10", "--duration", d]),
        "idle: 10 000 long-polling sessions": (SERVERS, ["--subscribers", "10000", "--publishers", "0", "--duration", "3", "--drain", "0"]),
        "handshakes: 32 workers, handshake + disconnect": (SERVERS, ["--mode", "handshake", "--concurrency", "32", "--duration", "3" if quick else "5"]),
        "workbin: POST rate with delivery (100 agents x 10 sessions)": (["bayeux"], ["--subscribers", "1000", "--channels", "100", "--publishers", "8", "--publish-via", "workbin", "--duration", d]),
        # WebSocket: ours against Faye's (cometd-nodejs-server has no WebSocket).
        "websocket fanout: 1 channel x 1000 subscribers, max rate": (WS_SERVERS, ["--transport", "websocket", "--subscribers", "1000", "--channels", "1", "--publishers", "4", "--batch", "10", "--duration", d]),
        "websocket latency: 1000 subscribers at 10 000 deliveries/s": (WS_SERVERS, ["--transport", "websocket", "--subscribers", "1000", "--channels", "1", "--publishers", "1", "--rate", "10", "--duration", d]),
        "websocket idle: 10 000 sessions": (WS_SERVERS, ["--transport", "websocket", "--subscribers", "10000", "--publishers", "0", "--duration", "3", "--drain", "0"]),
    }


SWEEP = [100, 1000, 3000]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def npm_ci_needed():
    """Whether tests/interop/node_modules is missing or older than its lock file (npm
    keeps its own copy of the lock file in node_modules when it installs)."""
    lock = os.path.join(INTEROP, "package-lock.json")
    installed = os.path.join(INTEROP, "node_modules", ".package-lock.json")
    return not os.path.exists(installed) or os.path.getmtime(installed) < os.path.getmtime(lock)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="run only the scenarios whose name contains this text (no sweep)")
    ap.add_argument("--client", choices=["bayeux", "node"], default="bayeux",
                    help="load generator: `bayeux bench` (default), or benches/node_load.mjs for "
                         "the fan-out and latency scenarios (results in BENCHMARKS-*-node.*)")
    ap.add_argument("--plot-only", action="store_true", help="redraw benches/scaling.svg from BENCHMARKS-results.json")
    opts = ap.parse_args()
    if opts.plot_only:
        with open(os.path.join(ROOT, "BENCHMARKS-results.json")) as f:
            write_svg(json.load(f))
        return

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if npm_ci_needed():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=INTEROP, check=True)

    client = opts.client
    node = client == "node"
    results = {}
    for round_no in range(opts.rounds):
        for name, (servers, args) in scenarios(opts.quick, client).items():
            if opts.only and opts.only not in name:
                continue
            for server in servers:  # alternating servers within the round
                print(f"round {round_no + 1}: {name}: {server}", file=sys.stderr, flush=True)
                results.setdefault(name, {}).setdefault(server, []).append(bench(server, args, client))
        for n in ([] if opts.only or node else SWEEP):
            name = f"sweep {n}"
            args = ["--subscribers", str(n), "--channels", "1", "--publishers", "4", "--batch", "10", "--duration", "3" if opts.quick else "5"]
            for server in SERVERS:
                print(f"round {round_no + 1}: {name}: {server}", file=sys.stderr, flush=True)
                results.setdefault(name, {}).setdefault(server, []).append(bench(server, args))

    # A partial run (--only) does not overwrite the full results, nor a Node-client run
    # the default ones.
    suffix = ("-node" if node else "") + ("-partial" if opts.only else "")
    with open(os.path.join(ROOT, f"BENCHMARKS-results{suffix}.json"), "w") as f:
        json.dump(results, f, indent=1)

    def med(name, server, key):
        return median([r.get(key) for r in results.get(name, {}).get(server, [])])

    lines = []
    if node:
        lines += ["Load generator: benches/node_load.mjs (Node clients: JSON.parse of every response, "
                  "a keep-alive connection or a `ws` socket per subscriber).", ""]
    lines += ["| scenario | server | delivered/s | p99 ms | server CPU µs/delivery | messages per response/frame | handshakes/s | server RSS KiB/session | lost |"
              + (" load tool CPU µs/delivery |" if node else ""),
              "|---|---|---|---|---|---|---|---|---|" + ("---|" if node else "")]
    for name in scenarios(opts.quick, client):
        for server in results.get(name, {}):
            subs = results[name][server][0].get("subscribers") or 0
            rss = med(name, server, "server_rss_kib_peak")
            per_session = f"{rss / subs:.2f}" if subs and rss else "-"
            cpu = med(name, server, "server_cpu_us_per_delivery")
            p99 = median([r.get("latency_ms", {}).get("p99") for r in results[name][server]]) or 0
            per_response = median([(r.get("messages_per_response") or {}).get("mean") for r in results[name][server]])
            row = "| {} | {} | {:.0f} | {:.2f} | {} | {} | {:.0f} | {} | {:.0f} |".format(
                name, server, med(name, server, "delivered_per_sec") or 0, p99,
                f"{cpu:.2f}" if cpu else "-", f"{per_response:.1f}" if per_response else "-",
                med(name, server, "handshakes_per_sec") or 0, per_session, med(name, server, "lost") or 0)
            if node:
                tool = med(name, server, "tool_cpu_us_per_delivery")
                row += f" {tool:.2f} |" if tool else " - |"
            lines.append(row)
    lines.append("")
    lines.append("Ratios (peer / bayeux; above 1 means bayeux is better for CPU, RSS and p99, and below 1 for throughput):")
    lines.append("")
    lines.append("| scenario | peer | delivered/s | p99 | CPU/delivery | RSS/session | handshakes/s |")
    lines.append("|---|---|---|---|---|---|---|")
    for name in scenarios(opts.quick, client):
        ours = results.get(name, {}).get("bayeux")
        if not ours:
            continue
        for peer in ("faye", "cometd-node"):
            if peer not in results[name]:
                continue
            def ratio(key, sub=None):
                get = (lambda r: r.get(key, {}).get(sub)) if sub else (lambda r: r.get(key))
                a = median([get(r) for r in results[name][peer]])
                b = median([get(r) for r in ours])
                return f"{a / b:.2f}" if a and b else "-"
            lines.append(f"| {name} | {peer} | {ratio('delivered_per_sec')} | {ratio('latency_ms', 'p99')} | {ratio('server_cpu_us_per_delivery')} | {ratio('server_rss_kib_peak')} | {ratio('handshakes_per_sec')} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(ROOT, f"BENCHMARKS-table{suffix}.md"), "w") as f:
        f.write(table + "\n")
    if not opts.only and not node:
        write_svg(results)


def write_svg(results):
    """Two line charts side by side: delivered/s and p99 ms against subscribers."""
    colors = {"bayeux": "#d62728", "faye": "#1f77b4", "cometd-node": "#2ca02c"}
    w, h, pad = 360, 260, 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w + 40}" height="{h + 60}" font-family="sans-serif" font-size="11">',
             '<rect width="100%" height="100%" fill="white"/>']
    for panel, (key, title) in enumerate([("delivered_per_sec", "delivered messages/s"), ("p99", "p99 latency (ms)")]):
        ox = 20 + panel * (w + 20)
        series = {}
        for server in SERVERS:
            pts = []
            for n in SWEEP:
                runs = results.get(f"sweep {n}", {}).get(server, [])
                vals = [r["latency_ms"]["p99"] if key == "p99" else r.get(key) for r in runs]
                m = median(vals)
                if m is not None:
                    pts.append((n, m))
            series[server] = pts
        ymax = max([v for pts in series.values() for _, v in pts] + [1]) * 1.1
        xmax = max(SWEEP)
        def X(n):
            return ox + pad + (w - pad - 30) * n / xmax
        def Y(v):
            return 20 + (h - 20) * (1 - v / ymax)
        parts.append(f'<text x="{ox + w / 2}" y="14" text-anchor="middle" font-weight="bold">{title} vs subscribers (1 channel)</text>')
        parts.append(f'<text x="{ox + w / 2}" y="{Y(0) + 30:.1f}" text-anchor="middle">subscribers</text>')
        parts.append(f'<line x1="{ox + pad}" y1="{Y(0):.1f}" x2="{ox + w - 10}" y2="{Y(0):.1f}" stroke="black"/>')
        parts.append(f'<line x1="{ox + pad}" y1="20" x2="{ox + pad}" y2="{Y(0):.1f}" stroke="black"/>')
        for i in range(5):
            v = ymax * i / 4
            parts.append(f'<text x="{ox + pad - 4}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
        for n in SWEEP:
            parts.append(f'<text x="{X(n):.1f}" y="{Y(0) + 14:.1f}" text-anchor="middle">{n}</text>')
        for i, (server, pts) in enumerate(series.items()):
            if pts:
                path = " ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v in pts)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{colors[server]}" stroke-width="2"/>')
                for n, v in pts:
                    parts.append(f'<circle cx="{X(n):.1f}" cy="{Y(v):.1f}" r="3" fill="{colors[server]}"/>')
            parts.append(f'<text x="{ox + pad + 10}" y="{36 + 14 * i}" fill="{colors[server]}">{server}</text>')
    parts.append("</svg>")
    with open(os.path.join(ROOT, "benches", "scaling.svg"), "w") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    main()
