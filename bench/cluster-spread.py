#!/usr/bin/env python3
"""Cluster answer spread: how far apart in time 3 gslb nodes change their
answer when a region fails or recovers.

Starts an HTTP backend for a primary (127.0.0.2) and a secondary
(127.0.0.3) region, writes one zone and three node settings files (each
node probing from its own 127.0.1.N), starts the three nodes as processes
against the etcd at URL, then for each trial makes the primary answer 503
(then 200 again) and polls all three nodes over UDP, round-robin, until
each answers the other region. The spread of a change is the time between
the first and the last node answering it (poll resolution: one round of
three queries, printed).

Leaves the nodes running when --keep is given (their DNS ports are printed),
for the CPU-per-query comparison in bench/cluster.sh.

  cluster-spread.py GSLB_BINARY ETCD_URL WORKDIR [TRIALS] [--keep]
"""
import http.server
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

from benchlib import failover_zone, free_port, query_a

gslb, etcd, work = sys.argv[1], sys.argv[2], sys.argv[3]
trials = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4].isdigit() else 20
keep = "--keep" in sys.argv
PORT = 18071
healthy = {"127.0.0.2": True, "127.0.0.3": True}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = healthy[self.server.server_address[0]]
        body = b"ok" if ok else b"down"
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # probes close with a reset (SO_LINGER 0): not an error here


for ip in healthy:
    srv = Server((ip, PORT), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

ZONE = failover_zone(PORT, PORT)

os.makedirs(f"{work}/zones", exist_ok=True)
open(f"{work}/zones/gslb.toml", "w").write(ZONE)



nodes = []
for i in (1, 2, 3):
    port = free_port()
    cfg = f"{work}/ns{i}.toml"
    open(cfg, "w").write(
        f'zones = "{work}/zones"\nlisten = ["127.0.0.1:{port}"]\nadmin = "off"\n'
        f'state-file = "off"\nlog-level = "warn"\nprobe-source = "127.0.1.{i}"\n\n'
        f'[cluster]\nname = "spread"\nnode = "ns{i}"\netcd = ["{etcd}"]\nlease-ttl = "5s"\n'
    )
    p = subprocess.Popen(
        [gslb, "serve", "--config", cfg, "--udp-workers", "1"],
        stdout=open(f"{work}/ns{i}.log", "w"),
        stderr=subprocess.STDOUT,
    )
    nodes.append((port, p))


def wait_all(want, limit=30):
    """Poll round-robin until every node answers `want`; the time each
    first did."""
    seen = [None] * len(nodes)
    start = time.monotonic()
    rounds = 0
    while None in seen:
        if time.monotonic() - start > limit:
            sys.exit(f"nodes did not all answer {want}: {seen}")
        for i, (_, p) in enumerate(nodes):
            if p.poll() is not None:
                sys.exit(f"node ns{i + 1} exited: " + open(f"{work}/ns{i + 1}.log").read())
        rounds += 1
        for i, (port, _) in enumerate(nodes):
            if seen[i] is None and query_a(port) == want:
                seen[i] = time.monotonic()
    return seen, (time.monotonic() - start) / rounds


wait_all("127.0.0.2", limit=60)
spreads = {"fail": [], "recover": []}
round_ms = []
for t in range(trials):
    for kind, primary_ok, want in (("fail", False, "127.0.0.3"), ("recover", True, "127.0.0.2")):
        healthy["127.0.0.2"] = primary_ok
        seen, per_round = wait_all(want)
        spreads[kind].append((max(seen) - min(seen)) * 1000)
        round_ms.append(per_round * 1000)

result = {"trials": trials, "poll_round_ms": statistics.median(round_ms)}
for kind, v in spreads.items():
    v.sort()
    result[kind] = {
        "median_ms": round(statistics.median(v), 2),
        "max_ms": round(v[-1], 2),
        "min_ms": round(v[0], 2),
    }
    print(f"{kind:8} spread over {trials}: median {statistics.median(v):.2f} ms, "
          f"min {v[0]:.2f}, max {v[-1]:.2f} ms")
print(f"poll resolution: one round of 3 queries = {statistics.median(round_ms):.2f} ms (median)")
print("RESULT " + json.dumps(result))
if keep:
    print("NODES " + " ".join(str(port) for port, _ in nodes) + " PIDS " + " ".join(str(p.pid) for _, p in nodes))
    sys.stdout.flush()
    # Keep the backends up while the caller measures; it kills us.
    while True:
        time.sleep(3600)
for _, p in nodes:
    p.terminate()
