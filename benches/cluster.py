#!/usr/bin/env python3
"""Several `bayeux serve` nodes through NATS, measured side by side on loopback.

Starts `nats-server` and N `bayeux serve --nats` nodes (the release binary) on free
ports of 127.0.0.1, runs `bayeux bench` against them, reads every process's CPU time
(/proc/PID/stat, user + system) and RSS, and prints (and writes, with --out) a table of
medians. Every configuration gets fresh processes; configurations alternate within each
round. Every process started here is stopped here, and everything stays on 127.0.0.0/8.

Scenarios (--only NAME, repeatable; default a, b, c):
  a  1 000 subscribers on one node with the publisher on it (no NATS), against 1 000
     subscribers split over two nodes with the publishers on a third (through NATS):
     flat out (4 publishers, batches of 10) and 10 000 deliveries/s, long-polling and
     WebSocket. Deliveries/s, p99, CPU per delivery of each process.
  b  the cost of a cross-node message: 4 publishers flat out (batches of 10) on one node,
     one WebSocket subscriber on another, against both on one node without NATS: CPU per
     message on the publishing node, the receiving node and nats-server.
  c  throughput from 1 to 3 nodes, all with NATS: 1 000 subscribers split evenly, 6
     publishers (batches of 10) round-robin over the nodes, flat out.
  d  the most sessions (--sessions, default 100 000): six nodes, the load split over
     six `bayeux bench` processes (each under the 20 000 open files a process may have
     here), each from its own 127.0.0.x source address, WebSocket sessions; RSS per
     session, the ramp-up, and the time one broadcast takes to reach them all (run
     with --only d; not part of the default set).

Usage: python3 benches/cluster.py [--rounds N] [--only a|b|c|d] [--quick] [--out FILE]
                                  [--sessions N] [--heartbeat SECONDS]
Needs: the release binary (`cargo build --release --bin bayeux`; in $CARGO_TARGET_DIR if
set, or --bin) and nats-server on the PATH. Only standard-library Python.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# The helpers compare.py already has (the same loopback ports, the same CPU reading).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import LOAD_BUDGETS, cpu_seconds, free_port, median, wait_port  # noqa: E402
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
RUN_TIMEOUT = 180  # seconds: the longest one load-tool run may take (scenarios a-c)


def default_bin():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release", "bayeux")








def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KIB
    except OSError:
        return 0


def loadavg():
    """The machine's 1-minute load average (other work on a shared machine shows here)."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Cluster:
    """nats-server (unless `nats` is False) and `n` nodes; `stop()` ends them all."""

    def __init__(self, binary, n, nats=True, extra=()):
        self.procs = []
        self.nats = None
        self.nodes = []  # (port, Popen)
        try:
            nats_url = None
            if nats:
                port = free_port()
                self.nats = self._spawn(["nats-server", "-a", "127.0.0.1", "-p", str(port)])
                wait_port(port)
                nats_url = f"nats://127.0.0.1:{port}"
            for _ in range(n):
                port = free_port()
                cmd = [binary, "serve", "--listen", f"127.0.0.1:{port}",
                       "--max-queue", "100000", "--max-queue-bytes", str(256 << 20)]
                cmd += LOAD_BUDGETS
                cmd += list(extra)
                if nats_url:
                    cmd += ["--nats", nats_url]
                self.nodes.append((port, self._spawn(cmd)))
            for port, _ in self.nodes:
                wait_port(port)
            if nats:
                self._wait_joined()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, cmd):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def _wait_joined(self, timeout=10):
        """Until every node's /metrics says its NATS link is up."""
        deadline = time.time() + timeout
        for port, _ in self.nodes:
            while time.time() < deadline:
                if metrics(port).get("bayeux_broker_connected") == 1:
                    break
                time.sleep(0.1)

    def url(self, i):
        return f"http://127.0.0.1:{self.nodes[i][0]}/cometd"

    def pids(self):
        out = {f"node{i + 1}": p.pid for i, (_, p) in enumerate(self.nodes)}
        if self.nats:
            out["nats"] = self.nats.pid
        return out

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def metrics(port):
    """The broker's counters from a node's /metrics (name -> value)."""
    out = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith(("bayeux_broker_", "bayeux_messages_dropped")):
            name, _, value = line.rpartition(" ")
            try:
                name = name.split("{")[0]
                out[name] = out.get(name, 0) + float(value)
            except ValueError:
                pass
    return out


def bench(binary, cluster, args, timeout=RUN_TIMEOUT):
    """One `bayeux bench` run against `cluster`; the report plus each process's CPU and
    peak RSS over the run."""
    pids = cluster.pids()
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    rss0 = {k: rss_kib(p) for k, p in pids.items()}
    cmd = [binary, "bench", "--json"] + args
    wall0 = time.time()
    b = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = dict(rss0)
    tool_peak = 0
    deadline = time.time() + timeout
    while b.poll() is None:
        if time.time() > deadline:
            b.kill()
            b.wait()
            return {"error": f"timed out after {timeout} s", "args": args}
        for k, p in pids.items():
            peak[k] = max(peak[k], rss_kib(p))
        tool_peak = max(tool_peak, rss_kib(b.pid))
        time.sleep(0.2)
    out = b.stdout.read()
    b.stdout.close()
    wall = time.time() - wall0
    cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "no report", "args": args}
    report["args"] = args
    report["wall_seconds"] = wall
    # Cores our processes got, on average over the tool's run (setup and drain
    # included): on a shared machine, more processes may get a larger share.
    report["cores_used"] = (sum(cpu.values()) + report["tool_cpu_seconds"]) / wall
    report["cpu_seconds"] = cpu
    report["rss_kib_peak"] = peak
    report["rss_kib_base"] = rss0
    report["tool_rss_kib_peak"] = tool_peak
    report["loadavg_after"] = loadavg()
    report["broker"] = {f"node{i + 1}": metrics(port) for i, (port, _) in enumerate(cluster.nodes)}
    for name in ["duplicates", "messages_dropped"]:
        report[f"broker_{name}"] = sum(m.get(f"bayeux_broker_{name}_total", 0)
                                       for m in report["broker"].values())
    report["session_drops"] = sum(m.get("bayeux_messages_dropped_total", 0)
                                  for m in report["broker"].values())
    d = report.get("delivered", 0)
    # Deliveries per second from the start of publishing to the last delivery: when
    # the publishers outrun the subscribers (through NATS nothing slows a publisher on
    # another node), the backlog is delivered after they stop, and counting it over the
    # publishing time alone would overstate the rate.
    last = report.get("last_delivery_seconds") or 0
    report["sustained_per_sec"] = d / max(last, report["publish_seconds"]) if d else 0
    report["cpu_us_per_delivery"] = {k: (c * 1e6 / d if d else None) for k, c in cpu.items()}
    report["tool_cpu_us_per_delivery"] = report["tool_cpu_seconds"] * 1e6 / d if d else None
    servers = sum(cpu.values())
    report["servers_cpu_us_per_delivery"] = servers * 1e6 / d if d else None
    return report


# --- a: one node against two plus a publishing node ---------------------------------

def scenario_a(binary, rounds, quick):
    dur = "3" if quick else "5"
    loads = {
        "flat out": ["--publishers", "4", "--batch", "10", "--duration", dur, "--drain", "30"],
        "10 000 deliveries/s": ["--publishers", "1", "--rate", "10", "--duration", "4" if quick else "8"],
    }
    results = {}
    for r in range(rounds):
        for transport in ["long-polling", "websocket"]:
            for load, largs in loads.items():
                for config in ["one node", "2 + 1 nodes, NATS"]:
                    common = ["--subscribers", "1000", "--transport", transport] + largs
                    if config == "one node":
                        cl = Cluster(binary, 1, nats=False)
                        args = [cl.url(0)] + common
                    else:
                        cl = Cluster(binary, 3)
                        args = [cl.url(2), "--subscribe-url", cl.url(0), "--subscribe-url",
                                cl.url(1), "--publish-url", cl.url(2)] + common
                    try:
                        rep = bench(binary, cl, args)
                    finally:
                        cl.stop()
                    key = f"{transport}, {load}, {config}"
                    results.setdefault(key, []).append(rep)
                    progress("a", r, key, rep)
    return results


# --- b: the cost of a cross-node message ---------------------------------------------

def scenario_b(binary, rounds, quick):
    dur = "3" if quick else "5"
    loads = {
        "flat out": ["--publishers", "4", "--batch", "10", "--duration", dur],
        "10 000 messages/s": ["--publishers", "4", "--batch", "10", "--rate", "10000",
                              "--duration", dur],
    }
    results = {}
    for r in range(rounds):
        for load, largs in loads.items():
            for config in ["one node", "publisher node + subscriber node, NATS"]:
                common = ["--subscribers", "1", "--transport", "websocket"] + largs
                if config == "one node":
                    cl = Cluster(binary, 1, nats=False)
                    args = [cl.url(0)] + common
                else:
                    cl = Cluster(binary, 2)
                    args = [cl.url(1), "--subscribe-url", cl.url(0), "--publish-url",
                            cl.url(1)] + common
                try:
                    rep = bench(binary, cl, args)
                finally:
                    cl.stop()
                key = f"{load}, {config}"
                results.setdefault(key, []).append(rep)
                progress("b", r, key, rep)
    return results


# --- c: one node to three --------------------------------------------------------------

def scenario_c(binary, rounds, quick):
    dur = "3" if quick else "5"
    results = {}
    for r in range(rounds):
        for transport in ["websocket", "long-polling"]:
            for n in [1, 2, 3]:
                cl = Cluster(binary, n)
                args = [cl.url(0)]
                for i in range(n):
                    args += ["--subscribe-url", cl.url(i), "--publish-url", cl.url(i)]
                args += ["--subscribers", "1000", "--publishers", "6", "--batch", "10",
                         "--duration", dur, "--drain", "30", "--transport", transport]
                try:
                    rep = bench(binary, cl, args)
                finally:
                    cl.stop()
                key = f"{transport}, {n} node{'s' if n > 1 else ''}"
                results.setdefault(key, []).append(rep)
                progress("c", r, key, rep)
    return results


def progress(scenario, r, key, rep):
    if "error" in rep:
        print(f"[{scenario} round {r + 1}] {key}: {rep['error']}", file=sys.stderr)
        return
    print(f"[{scenario} round {r + 1}] {key}: {rep['sustained_per_sec']:.0f}/s, p99 "
          f"{rep['latency_ms']['p99']:.1f} ms, lost {rep['lost']}, servers "
          f"{rep['servers_cpu_us_per_delivery']:.3f} µs/delivery, NATS dropped "
          f"{rep['broker_messages_dropped']:.0f} duplicates {rep['broker_duplicates']:.0f}",
          file=sys.stderr)


# --- d: the most sessions ------------------------------------------------------------------

def scenario_d(binary, rounds, sessions, heartbeat, nodes=6, tools=6, broadcasts=3, gap=20):
    """`rounds` attempts at `sessions` WebSocket sessions over `nodes` nodes. The nodes
    hold each connect `heartbeat` seconds and expire a session `heartbeat` seconds after
    its last connect reply (the defaults, 30 s and 10 s, mean 3 300 heartbeats a second
    at 100 000 sessions, and expire sessions whose load tool, starved on two shared
    cores, answers a heartbeat late). `broadcasts` broadcasts, `gap` seconds apart, so
    that each is timed alone."""
    results = []
    per_tool = [sessions // tools + (1 if i < sessions % tools else 0) for i in range(tools)]
    for r in range(rounds):
        extra = ["--max-sessions", str(sessions // nodes + 1000)]
        if heartbeat:
            extra += ["--timeout", f"{heartbeat}s", "--max-interval", f"{heartbeat}s"]
        cl = Cluster(binary, nodes, extra=extra)
        tmp = tempfile.mkdtemp(prefix="bayeux-cluster-")
        procs = []
        rec = {"sessions": sessions, "nodes": nodes, "tools": tools, "heartbeat": heartbeat}
        try:
            time.sleep(0.5)
            pids = cl.pids()
            rss0 = {k: rss_kib(p) for k, p in pids.items()}
            hold = broadcasts * gap + 120  # the longest a tool waits for the broadcasts
            started = time.time()
            for i, n in enumerate(per_tool):
                args = [binary, "bench", cl.url(0), "--json", "--mode", "broadcast",
                        "--transport", "websocket", "--subscribers", str(n),
                        "--publishers", "0", "--broadcasts", str(broadcasts),
                        "--duration", str(hold), "--timeout", "30s",
                        "--poll-timeout", f"{int((heartbeat or 30) * 1.5)}s",
                        "--source-ip", f"127.0.0.{10 + i}",
                        "--ready-file", os.path.join(tmp, f"ready{i}")]
                for k in range(nodes):
                    args += ["--subscribe-url", cl.url(k)]
                out = open(os.path.join(tmp, f"out{i}"), "w")
                procs.append((subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL), out))
            # The ramp-up: until every tool says its sessions are established.
            deadline = started + 300
            while time.time() < deadline:
                if all(os.path.exists(os.path.join(tmp, f"ready{i}")) for i in range(tools)):
                    break
                if any(p.poll() is not None for p, _ in procs):
                    break
                time.sleep(0.2)
            ready = [os.path.exists(os.path.join(tmp, f"ready{i}")) for i in range(tools)]
            rec["ramp_up_seconds"] = time.time() - started
            rec["loadavg_after_ramp_up"] = loadavg()
            rec["tools_ready"] = sum(ready)
            time.sleep(3)  # settle: first connects answered, allocator steady
            rec["rss_kib"] = {k: rss_kib(p) for k, p in pids.items()}
            rec["rss_kib_base"] = rss0
            rec["tool_rss_kib"] = [rss_kib(p.pid) for p, _ in procs]
            rec["tool_sessions"] = per_tool
            rec["node_sockets"] = {f"node{i + 1}": len(os.listdir(f"/proc/{p.pid}/fd"))
                                   for i, (_, p) in enumerate(cl.nodes)}
            if all(ready):
                # What holding the sessions costs (heartbeats), over 10 s, then the
                # broadcasts.
                idle0 = {k: cpu_seconds(p) for k, p in pids.items()}
                tools0 = sum(cpu_seconds(p.pid) for p, _ in procs)
                time.sleep(10)
                cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
                rec["idle_cpu_per_second"] = {k: (cpu0[k] - idle0[k]) / 10 for k in pids}
                rec["tools_idle_cpu_per_second"] = (sum(cpu_seconds(p.pid) for p, _ in procs) - tools0) / 10
                pub_started = time.time()
                pub = subprocess.run(
                    [binary, "bench", cl.url(0), "--json", "--mode", "broadcast",
                     "--subscribers", "0", "--publishers", "1", "--broadcasts", str(broadcasts),
                     "--broadcast-interval", f"{gap}s", "--source-ip", "127.0.0.9"],
                    capture_output=True, text=True, timeout=broadcasts * gap + 60)
                rec["publisher"] = json.loads(pub.stdout.strip().splitlines()[-1])
            # The tools end once every broadcast reached all their sessions.
            reports = []
            for p, out in procs:
                try:
                    p.wait(timeout=gap + 60 if all(ready) else 1)
                except subprocess.TimeoutExpired:
                    p.terminate()
                    p.wait()
                out.close()
            for i in range(tools):
                with open(os.path.join(tmp, f"out{i}")) as f:
                    text = f.read().strip()
                try:
                    reports.append(json.loads(text.splitlines()[-1]))
                except (ValueError, IndexError):
                    reports.append({"error": text[-500:] or "no report"})
            rec["tool_reports"] = reports
            if all(ready):
                rec["cpu_seconds_broadcasts"] = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
                rec["broadcast_window_seconds"] = time.time() - pub_started
                rec["broadcasts"] = merge_broadcasts(rec["publisher"], reports, sessions)
        finally:
            for p, out in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                if not out.closed:
                    out.close()
            cl.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        results.append(rec)
        b = rec.get("broadcasts", [])
        print(f"[d round {r + 1}] {sessions} sessions: ramp-up {rec['ramp_up_seconds']:.1f} s, "
              f"{rec['tools_ready']}/{tools} tools ready, reach "
              f"{[x['reach_ms'] for x in b]}", file=sys.stderr)
    return results


def merge_broadcasts(publisher, reports, sessions):
    """Per broadcast: sessions reached over every tool, and the time from publish to the
    last of them (wall-clock stamps of one machine)."""
    out = []
    for sent in publisher.get("broadcasts", []):
        seq, t = sent["seq"], sent["sent_us"]
        received, last, first = 0, None, None
        for rep in reports:
            for b in rep.get("broadcasts", []):
                if b["seq"] == seq and b.get("last_us"):
                    received += b["received"]
                    last = max(last or 0, b["last_us"])
                    first = min(first or b["first_us"], b["first_us"])
        out.append({
            "seq": seq,
            "received": received,
            "first_ms": (first - t) / 1000 if first else None,
            "reach_ms": (last - t) / 1000 if last and received == sessions else None,
        })
    return out


# --- tables ------------------------------------------------------------------------------

def fmt(v, digits=1):
    if v is None:
        return "—"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def table_runs(results, title, cpu_keys):
    lines = [f"### {title}", "",
             "| case | deliveries/s | p99 ms | lost | " + " | ".join(f"{k} CPU µs/delivery" for k in cpu_keys)
             + " | all servers µs/delivery | tool µs/delivery | messages per response/frame | cores used | rounds |",
             "|---" * (8 + len(cpu_keys)) + "|---|"]
    for key, reps in results.items():
        ok = [r for r in reps if "error" not in r]
        cells = [key, fmt(median([r.get("sustained_per_sec", r["delivered_per_sec"]) for r in ok]), 0),
                 fmt(median([r["latency_ms"]["p99"] for r in ok])),
                 fmt(median([r["lost"] for r in ok]), 0)]
        for k in cpu_keys:
            cells.append(fmt(median([r["cpu_us_per_delivery"].get(k) for r in ok]), 3))
        cells.append(fmt(median([r["servers_cpu_us_per_delivery"] for r in ok]), 3))
        cells.append(fmt(median([r["tool_cpu_us_per_delivery"] for r in ok]), 3))
        cells.append(fmt(median([r["messages_per_response"]["mean"] for r in ok])))
        cells.append(fmt(median([r.get("cores_used") for r in ok]), 2))
        cells.append(f"{len(ok)}/{len(reps)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_b(results):
    lines = ["### b. cost of a cross-node message", "",
             "| case | messages/s | p99 ms | lost | publishing node µs/message | receiving node µs/message | nats-server µs/message | all µs/message | rounds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, reps in results.items():
        ok = [r for r in reps if "error" not in r]
        one = "one node" in key

        def per_msg(r, k):
            d = r["delivered"]
            return r["cpu_seconds"].get(k, 0) * 1e6 / d if d else None
        lines.append("| " + " | ".join([
            key, fmt(median([r.get("sustained_per_sec", r["delivered_per_sec"]) for r in ok]), 0),
            fmt(median([r["latency_ms"]["p99"] for r in ok])),
            fmt(median([r["lost"] for r in ok]), 0),
            fmt(median([per_msg(r, "node1" if one else "node2") for r in ok]), 3),
            "(same node)" if one else fmt(median([per_msg(r, "node1") for r in ok]), 3),
            "—" if one else fmt(median([per_msg(r, "nats") for r in ok]), 3),
            fmt(median([r["servers_cpu_us_per_delivery"] for r in ok]), 3),
            f"{len(ok)}/{len(reps)}"]) + " |")
    return "\n".join(lines)


def table_d(results):
    lines = ["### d. the most sessions", "",
             "| round | sessions (nodes × tools) | established | ramp-up s | load-tool errors (http / bayeux / re-handshakes) "
             "| node RSS KiB/session (min-max) | load tool RSS KiB/session | broadcast: first / last arrival ms | "
             "node CPU µs/delivery in the broadcasts (heartbeats taken off) | load average |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r, rec in enumerate(results):
        nodes = [k for k in rec.get("rss_kib", {}) if k.startswith("node")]
        per_node = rec["sessions"] / rec["nodes"]
        node_kib = [(rec["rss_kib"][k] - rec["rss_kib_base"][k]) / per_node for k in nodes]
        tool_kib = [rss / n for rss, n in zip(rec.get("tool_rss_kib", []), rec.get("tool_sessions", [])) if n]
        reps = [t for t in rec.get("tool_reports", []) if "error" not in t]
        errors = " / ".join(str(sum(t[k] for t in reps)) for k in ["http_errors", "bayeux_errors", "rehandshakes"])
        b = rec.get("broadcasts", [])
        arrivals = "; ".join(f"{fmt(x['first_ms'], 0)} / {fmt(x['reach_ms'], 0)}" for x in b)
        cpu = "—"
        if rec.get("broadcast_window_seconds") and b:
            window = rec["broadcast_window_seconds"]
            net = sum(rec["cpu_seconds_broadcasts"][k] - rec["idle_cpu_per_second"][k] * window for k in nodes)
            cpu = fmt(net * 1e6 / (len(b) * rec["sessions"]), 1)
        lines.append("| " + " | ".join([
            str(r + 1), f"{rec['sessions']} ({rec['nodes']} × {rec['tools']})",
            f"{sum(t.get('subscribers', 0) for t in reps) if rec['tools_ready'] == rec['tools'] else rec['tools_ready']}",
            fmt(rec["ramp_up_seconds"]), errors,
            f"{fmt(min(node_kib), 2)}-{fmt(max(node_kib), 2)}" if node_kib else "—",
            fmt(median(tool_kib), 2), arrivals or "—", cpu,
            fmt(rec.get("loadavg_after_ramp_up"))]) + " |")
    reach = [x["reach_ms"] for rec in results for x in rec.get("broadcasts", [])]
    lines += ["", f"Median time for one broadcast to reach every session: {fmt(median(reach), 0)} ms "
              f"(over {len([x for x in reach if x is not None])} broadcasts)."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", action="append", choices=["a", "b", "c", "d"])
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    ap.add_argument("--sessions", type=int, default=100_000, help="scenario d's sessions")
    ap.add_argument("--heartbeat", type=int, default=60,
                    help="scenario d: the nodes' --timeout and --max-interval, seconds (0: defaults)")
    ap.add_argument("--bin", default=default_bin())
    ap.add_argument("--out", help="write every run's figures to this JSON file")
    ap.add_argument("--from", dest="sources", action="append", metavar="FILE",
                    help="print the tables of earlier --out files (repeatable: their rounds "
                         "are pooled) instead of running")
    opts = ap.parse_args()
    if opts.sources:
        pooled = {}
        for path in opts.sources:
            with open(path) as f:
                for scenario, results in json.load(f).items():
                    if scenario == "d":
                        pooled.setdefault("d", []).extend(results)
                        continue
                    for key, reps in results.items():
                        pooled.setdefault(scenario, {}).setdefault(key, []).extend(reps)
        print(tables(pooled))
        return
    if not os.path.exists(opts.bin):
        sys.exit(f"{opts.bin}: build it first (cargo build --release --bin bayeux)")
    if not shutil.which("nats-server"):
        sys.exit("nats-server is not on the PATH")
    only = opts.only or ["a", "b", "c"]
    out = {}
    if "a" in only:
        out["a"] = scenario_a(opts.bin, opts.rounds, opts.quick)
    if "b" in only:
        out["b"] = scenario_b(opts.bin, opts.rounds, opts.quick)
    if "c" in only:
        out["c"] = scenario_c(opts.bin, opts.rounds, opts.quick)
    if "d" in only:
        out["d"] = scenario_d(opts.bin, opts.rounds, opts.sessions, opts.heartbeat)
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump(out, f, indent=1)
    print(tables(out))


def tables(out):
    """The markdown tables of the scenarios in `out`."""
    parts = []
    if "a" in out:
        parts.append(table_runs(out["a"], "a. one node against 2 + 1 through NATS",
                                ["node1", "node2", "node3", "nats"]))
    if "b" in out:
        parts.append(table_b(out["b"]))
    if "c" in out:
        parts.append(table_runs(out["c"], "c. one node to three",
                                ["node1", "node2", "node3", "nats"]))
    if "d" in out:
        parts.append(table_d(out["d"]))
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
