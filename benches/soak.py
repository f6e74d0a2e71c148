#!/usr/bin/env python3
"""Bounded soak: clients churn against `bayeux serve` (handshake, subscribe, connect,
then disconnect or vanish) for a set time; afterwards the session count must return to
zero (vanished sessions expire after interval + maxInterval) and the memory is compared
with its baseline. Not part of CI: run by hand, report the figures in the README.

Usage: python3 benches/soak.py [--seconds 60] [--concurrency 32]
"""
import argparse
import json
import os
import re
import socket
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "bayeux")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--cycles", type=int, default=2, help="churn, then wait for expiry, this many times")
    opts = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--max-interval", "2000", "--stats-every", "1",
         # One address churns thousands of sessions: lift the per-address budgets.
         "--max-connections-per-address", "100000", "--max-sessions-per-address", "100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stats = []
    def read():
        for line in server.stderr:
            m = re.search(r"sessions=(\d+) rss_kib=(\d+)", line)
            if m:
                stats.append((time.time(), int(m.group(1)), int(m.group(2))))
    threading.Thread(target=read, daemon=True).start()
    try:
        time.sleep(2.5)
        baseline = stats[-1][2]
        for cycle in range(opts.cycles):
            t0 = time.time()
            out = subprocess.run([BIN, "bench", f"http://127.0.0.1:{port}/cometd", "--mode", "churn",
                                  "--concurrency", str(opts.concurrency), "--duration", str(opts.seconds), "--json"],
                                 capture_output=True, text=True, check=True).stdout
            t1 = time.time()
            during = [s for s in stats if t0 <= s[0] <= t1]
            peak_sessions = max((s[1] for s in during), default=0)
            peak_rss = max((s[2] for s in during), default=0)
            deadline = time.time() + 30
            while time.time() < deadline and (stats[-1][1] != 0 or stats[-1][0] < t1 + 1):
                time.sleep(0.5)
            time.sleep(2)
            final_sessions, final_rss = stats[-1][1], stats[-1][2]
            handshakes = json.loads(out)["handshakes"]
            print(f"soak cycle {cycle + 1}: {opts.seconds:.0f} s, {opts.concurrency} workers, {handshakes} sessions opened; "
                  f"baseline RSS {baseline} KiB; peak {peak_sessions} live sessions, {peak_rss} KiB; "
                  f"after expiry {final_sessions} sessions, {final_rss} KiB ({final_rss - baseline:+d} KiB against the baseline)",
                  flush=True)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
