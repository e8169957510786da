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
import socket
import statistics
import struct
import subprocess
import sys
import time

gslb, backend, work = sys.argv[1], sys.argv[2], sys.argv[3]
reps = int(sys.argv[4]) if len(sys.argv) > 4 else 20
P1, P2, DNS = 18111, 18112, 5391
os.makedirs(f"{work}/zones", exist_ok=True)
open(f"{work}/zones/z.toml", "w").write(f"""[zone]
name = "gslb.example.com."
nameservers = ["ns1.gslb.example.com."]
hostmaster = "hostmaster.example.com."

[[record]]
name = "ns1"
type = "A"
value = "127.0.0.1"

[check.primary]
type = "http"
port = {P1}
path = "/health"
interval = "1s"
timeout = "500ms"
recheck = "200ms"

[check.secondary]
type = "http"
port = {P2}
path = "/health"
interval = "1s"
timeout = "500ms"
recheck = "200ms"

[region.primary]
endpoints = ["127.0.0.2"]
check = "primary"

[region.secondary]
endpoints = ["127.0.0.3"]
check = "secondary"

[service.api]
regions = ["primary", "secondary"]
ttl = 30
""")


def start_backend(port):
    return subprocess.Popen([backend, str(port)], stderr=subprocess.DEVNULL)


def query():
    q = struct.pack(">HHHHHH", random.randrange(65536), 0, 1, 0, 0, 0)
    for label in b"api.gslb.example.com".split(b"."):
        q += bytes([len(label)]) + label
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    try:
        s.sendto(q, ("127.0.0.1", DNS))
        r = s.recv(512)
        return ".".join(str(b) for b in r[-4:])
    except OSError:
        return None
    finally:
        s.close()


def wait_for(want, limit=30):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if query() == want:
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
