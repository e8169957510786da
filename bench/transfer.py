#!/usr/bin/env python3
"""Zone transfers: how soon NSD and Knot, secondaries of gslb, answer a
failover after gslb does; and a 100,000-record zone's AXFR from gslb beside
the same zone's AXFR from NSD. Run by bench/transfer.sh (which builds gslb
and installs NSD and Knot); everything on loopback.

  transfer.py GSLB RUNS
"""
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port  # noqa: E402

GSLB = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ=="


def query(name, qtype=1):
    qid = os.getpid() & 0xFFFF
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)


def skip_name(m, i):
    while True:
        n = m[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def records(m):
    """(type, rdata) of the answer section."""
    qd, an = struct.unpack(">HH", m[4:8])
    i = 12
    for _ in range(qd):
        i = skip_name(m, i) + 4
    out = []
    for _ in range(an):
        i = skip_name(m, i)
        rtype, _, _, rdlen = struct.unpack(">HHIH", m[i:i + 10])
        out.append((rtype, m[i + 10:i + 10 + rdlen]))
        i += 10 + rdlen
    return out


def a_of(port, name, sock):
    sock.sendto(query(name), ("127.0.0.1", port))
    try:
        m = sock.recv(4096)
    except socket.timeout:
        return None
    return [".".join(str(b) for b in rd) for t, rd in records(m) if t == 1]


def axfr(port, zone):
    """Seconds for a whole AXFR of `zone`, and its records."""
    q = query(zone, 252)
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    s.sendall(struct.pack(">H", len(q)) + q)
    f = s.makefile("rb")
    soas, n = 0, 0
    while soas < 2:
        ln = struct.unpack(">H", f.read(2))[0]
        m = f.read(ln)
        if m[3] & 0x0F:
            raise SystemExit(f"AXFR from {port} refused: rcode {m[3] & 0x0F}")
        for t, _ in records(m):
            n += 1
            soas += t == 6
    dt = time.perf_counter() - t0
    s.close()
    return dt, n


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def wait(what, cond, limit=60):
    end = time.time() + limit
    while time.time() < end:
        if cond():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def start_gslb(d, zone_text, port, admin, key=True):
    os.makedirs(f"{d}/zones", exist_ok=True)
    with open(f"{d}/zones/z.toml", "w") as f:
        f.write(zone_text)
    with open(f"{d}/xfr.key", "w") as f:
        f.write(SECRET + "\n")
    with open(f"{d}/gslb.toml", "w") as f:
        f.write('[tsig.xfr-key]\nsecret-file = "xfr.key"\n' if key else "")
    return subprocess.Popen(
        [GSLB, "serve", "--config", f"{d}/gslb.toml", "--zones", f"{d}/zones",
         "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
         "--state-file", "off", "--log-level", "warn", "--udp-workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(f"{d}/gslb.log", "w"))


def start_nsd(d, port, primary, key=True, serve=False):
    os.makedirs(d, exist_ok=True)
    k = " xfr-key" if key else " NOKEY"
    conf = f"""server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    zonesdir: "{d}"
    database: ""
    pidfile: "{d}/nsd.pid"
    xfrdfile: "{d}/xfrd.state"
    zonelistfile: "{d}/zone.list"
    logfile: "{d}/log"
    username: ""
    chroot: ""
    xfrd-reload-timeout: 0
remote-control:
    control-enable: no
key:
    name: "xfr-key"
    algorithm: hmac-sha256
    secret: "{SECRET}"
"""
    return conf, k


def nsd(d, port, primary, zone, key=True, provide=False):
    conf, k = start_nsd(d, port, primary, key)
    conf += f"""zone:
    name: "{zone}"
    zonefile: "z.zone"
    request-xfr: 127.0.0.1@{primary}{k}
    allow-notify: 127.0.0.1{k}
"""
    if provide:
        conf += "    provide-xfr: 127.0.0.0/8 NOKEY\n"
    with open(f"{d}/nsd.conf", "w") as f:
        f.write(conf)
    return subprocess.Popen(["/usr/sbin/nsd", "-d", "-c", f"{d}/nsd.conf"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def knot(d, port, primary, zone):
    os.makedirs(d, exist_ok=True)
    conf = f"""server:
    listen: 127.0.0.1@{port}
    rundir: "{d}"
log:
  - target: "{d}/log"
    any: info
database:
    storage: "{d}"
key:
  - id: xfr-key
    algorithm: hmac-sha256
    secret: {SECRET}
remote:
  - id: gslb
    address: 127.0.0.1@{primary}
    key: xfr-key
acl:
  - id: gslb-notify
    address: 127.0.0.1
    key: xfr-key
    action: notify
template:
  - id: default
    storage: "{d}"
zone:
  - domain: {zone}
    master: gslb
    acl: gslb-notify
"""
    with open(f"{d}/knot.conf", "w") as f:
        f.write(conf)
    return subprocess.Popen(["/usr/sbin/knotd", "-c", f"{d}/knot.conf"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def med(xs):
    return f"{statistics.median(xs):.1f} [{min(xs):.1f}-{max(xs):.1f}]"


def failover(tmp):
    gport, admin, nport, kport = free_port(), free_port(), free_port(), free_port()
    zone = f"""[zone]
name = "xfr.example."
nameservers = ["ns1.example.net."]
hostmaster = "hostmaster.xfr.example."

[transfer]
allow = ["127.0.0.0/8"]
notify = ["127.0.0.1:{nport}", "127.0.0.1:{kport}"]
tsig-key = "xfr-key"

[region.a]
endpoints = ["192.0.2.1"]

[region.b]
endpoints = ["192.0.2.2"]

[service.www]
regions = ["a", "b"]
ttl = 5
"""
    procs = [start_gslb(f"{tmp}/gslb", zone, gport, admin)]
    if procs[0].poll() is None:
        time.sleep(0.2)
    if procs[0].poll() is not None:
        raise SystemExit("gslb exited: " + open(f"{tmp}/gslb/gslb.log").read())
    procs.append(nsd(f"{tmp}/nsd", nport, gport, "xfr.example."))
    procs.append(knot(f"{tmp}/knot", kport, gport, "xfr.example."))
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        servers = {"gslb": gport, "NSD": nport, "Knot": kport}
        wait("the secondaries to load", lambda: all(
            a_of(p, "www.xfr.example.", s) == ["192.0.2.1"] for p in servers.values()))
        lag = {name: [] for name in servers}
        for i in range(RUNS):
            action, want = ("drain", "192.0.2.2") if i % 2 == 0 else ("undrain", "192.0.2.1")
            req = urllib.request.Request(
                f"http://127.0.0.1:{admin}/api/v1/regions/_/a/{action}", method="POST",
                headers={"Content-Type": "application/json"})
            # The override is in force when the call returns (it answers
            # after applying it): time from there.
            urllib.request.urlopen(req).read()
            t0 = time.perf_counter()
            seen = {}
            end = time.time() + 10
            while len(seen) < len(servers) and time.time() < end:
                for name, port in servers.items():
                    if name not in seen and a_of(port, "www.xfr.example.", s) == [want]:
                        seen[name] = (time.perf_counter() - t0) * 1000
            if len(seen) < len(servers):
                raise SystemExit(f"run {i}: only {sorted(seen)} followed")
            for name in servers:
                lag[name].append(seen[name] - (seen["gslb"] if name != "gslb" else 0))
            time.sleep(0.2)
        print(f"failover seen, {RUNS} runs (drain/undrain of the primary through the admin API), ms, median [range]:")
        print(f"  gslb's own answer, after the API call returned: {med(lag['gslb'])} (one query's round trip: the first answer after it is the new one)")
        for name in ("NSD", "Knot"):
            print(f"  {name}'s answer, after gslb's:                    {med(lag[name])}")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
        for line in metrics.splitlines():
            if line.startswith(("gslb_notify_total", "gslb_transfers_total")):
                print("  " + line)
        return lag
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def big_zone(tmp, n):
    gport, admin, nport = free_port(), free_port(), free_port()
    gen = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "gen-zone.py"),
                          "records", str(n)], capture_output=True, text=True, check=True).stdout
    zone = gen.replace("[[record]]", '[transfer]\nallow = ["127.0.0.0/8"]\n\n[[record]]', 1)
    g = start_gslb(f"{tmp}/big", zone, gport, admin, key=False)
    procs = [g]
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        wait("gslb to load the zone", lambda: a_of(gport, "static.scale.example.", s) == ["192.0.2.10"], 300)
        time.sleep(1.5)  # the reload trim (malloc_trim) runs a second after start
        before = rss_kb(g.pid)
        procs.append(nsd(f"{tmp}/bignsd", nport, gport, "scale.example.", key=False, provide=True))
        wait("NSD to load the zone", lambda: a_of(nport, "static.scale.example.", s) == ["192.0.2.10"], 300)
        rows = []
        for _ in range(3):
            g_t, g_n = axfr(gport, "scale.example.")
            n_t, n_n = axfr(nport, "scale.example.")
            rows.append((g_t, n_t))
        after = rss_kb(g.pid)
        peak = rss_kb(g.pid, "VmHWM")
        gs = [r[0] * 1000 for r in rows]
        ns = [r[1] * 1000 for r in rows]
        print(f"AXFR of a {n:,}-record zone ({g_n:,} records as transferred), 3 runs interleaved, ms, median [range]:")
        print(f"  from gslb: {med(gs)}   from NSD: {med(ns)}   ratio gslb/NSD: {statistics.median(gs) / statistics.median(ns):.2f}")
        print(f"  gslb RSS: {before / 1024:.0f} MiB serving, {after / 1024:.0f} MiB after the transfers, peak {peak / 1024:.0f} MiB (the peak includes loading)")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        failover(tmp)
        big_zone(tmp, int(os.environ.get("RECORDS", "100000")))


if __name__ == "__main__":
    main()
