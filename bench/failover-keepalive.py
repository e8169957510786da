#!/usr/bin/env python3
"""Failover time of gslb against keep-alive backends (as nginx and most
servers are): the time from killing the primary's backend process to the
first answer without it, and from restarting it to the first answer with
it again. bench/failover.sh measures the same beside gdnsd and PowerDNS,
but the peers' backends (python http.server) close every connection after
one response, so nothing is kept there to notice a kill.

Check as in bench/zones: interval 1 s, timeout 500 ms, fall 3, rise 2,
recheck 200 ms. Backends: examples/bench_backend (keep-alive), one process
per region on its own port. Answers polled every 10 ms over UDP.

  failover-keepalive.py GSLB BENCH_BACKEND WORKDIR [REPS]
"""
import os
import random
import statistics
import subprocess
import sys
import time

from benchlib import failover_zone, query_a

gslb, backend, work = sys.argv[1], sys.argv[2], sys.argv[3]
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 20
P1, P2, DNS = 18111, 18112, 5391
os.makedirs(f"{work}/zones", exist_ok=True)
open(f"{work}/zones/z.toml", "w").write(failover_zone(P1, P2))


def start_backend(port):
    return subprocess.Popen([backend, str(port)], stderr=subprocess.DEVNULL)


def wait_for(want, limit=30):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if query_a(DNS) == want:
            return time.monotonic() - start
        time.sleep(0.01)
    sys.exit(f"no answer {want} within {limit} s")


secondary = start_backend(P2)
primary = start_backend(P1)
server = subprocess.Popen(
    [gslb, "serve", "--zones", f"{work}/zones", "--listen", f"127.0.0.1:{DNS}",
     "--admin", "off", "--state-file", "off", "--log-level", "warn", "--udp-workers", "1"],
    stderr=open(f"{work}/gslb.log", "w"))
try:
    time.sleep(0.5)
    wait_for("127.0.0.2")
    time.sleep(2)  # every probe has run and kept its connection
    down, up = [], []
    for i in range(reps):
        primary.kill()
        primary.wait()
        down.append(wait_for("127.0.0.3"))
        primary = start_backend(P1)
        up.append(wait_for("127.0.0.2"))
        time.sleep(1.5 + random.random())  # a random phase against the interval
        print(f"rep {i + 1}: down {down[-1]:.2f} s, up {up[-1]:.2f} s", flush=True)
    for name, v in (("killed -> answer without it", down), ("restarted -> answer with it", up)):
        v.sort()
        print(f"{name}: median {statistics.median(v):.2f} s [{v[0]:.2f}-{v[-1]:.2f}] over {reps}")
finally:
    server.terminate()
    primary.kill()
    secondary.kill()
