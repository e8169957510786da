#!/usr/bin/env python3
"""Generate benchmark zones.

  gen-zone.py services N > zone.toml   N failover services over 2 regions (zone scale)
  gen-zone.py records N > zone.toml    N static records: A, AAAA, TXT and MX in turn,
                                       at names host0..hostN/4 (zone scale, memory per record)
  gen-zone.py endpoints N [KIND] [PORT] > zone.toml
                                       N endpoints on 127.1.x.y in regions of 100,
                                       probed by an http (default), tcp, dns, icmp
                                       or exec check every 1 s
"""
import os
import sys

HEAD = """[zone]
name = "scale.example."
nameservers = ["ns1.scale.example."]
hostmaster = "hostmaster.scale.example."

[[record]]
name = "ns1"
type = "A"
value = "127.0.0.1"

[[record]]
name = "static"
type = "A"
value = "192.0.2.10"
"""

def services(n):
    out = [HEAD, """
[region.east]
endpoints = ["192.0.2.1", "192.0.2.2"]

[region.west]
endpoints = ["198.51.100.1", "198.51.100.2"]
"""]
    for i in range(n):
        out.append(f'\n[service.svc{i}]\nregions = ["east", "west"]\nttl = 30\n')
    return "".join(out)

def address_groups(n):
    """n addresses on 127.1.x.y in groups of 100 (a region, or a gdnsd
    resource, each)."""
    for r in range((n + 99) // 100):
        yield [f"127.1.{k // 250}.{k % 250 + 1}"
               for k in range(r * 100 + 1, r * 100 + min(100, n - r * 100) + 1)]

def endpoints(n, kind="http", port=18090, ca_file=None):
    """kind: http (connections reused, the default), http-fresh (a new
    connection per probe), https (host bench.test, verified against
    ca_file), https-fresh (the same, a handshake per probe), tcp, dns (a
    query for static.gslb.example.com to 127.0.0.1:port for every endpoint:
    gslb bound to 0.0.0.0 answers from 127.0.0.1 whatever address was
    asked, which a probe's connected socket rightly ignores), icmp, or
    exec (/bin/true), or grpc (the health protocol over h2c)."""
    http = kind.startswith("http")
    tls = kind.startswith("https")
    own = {
        "dns": 'query-name = "static.gslb.example.com"',
        "exec": 'command = ["/bin/true"]' + chr(10) + "max-running = 256",
    }.get(kind, "")
    target = f'target = "127.0.0.1:{port}"'
    out = [HEAD, f"""
[check.c]
type = "{'https' if tls else 'http' if http else kind}"
{target if kind == "dns" else f"port = {port}" if kind not in ("icmp", "exec") else ""}
{own}
{'path = "/health"' if http else ""}
{'reuse-connection = false' if kind.endswith("-fresh") else ""}
{f'host = "bench.test"{chr(10)}ca-file = "{ca_file}"' if tls else ""}
interval = "{os.environ.get('INTERVAL', '1s')}"
timeout = "{os.environ.get('TIMEOUT', '500ms')}"
"""]
    regions = []
    for r, addrs in enumerate(address_groups(n)):
        eps = [f'"{a}"' for a in addrs]
        out.append(f"\n[region.r{r}]\nendpoints = [{', '.join(eps)}]\ncheck = \"c\"\n")
        regions.append(f'"r{r}"')
    out.append(f"\n[service.all]\npolicy = \"all-healthy\"\nregions = [{', '.join(regions[:64])}]\n")
    return "".join(out)

def gdnsd_config(n, kind="http-fresh", port=18090, interval=2):
    """gdnsd 3's config probing the same n addresses as endpoints(): its
    http_status plugin (GET /health, a new connection per probe, as gdnsd
    always does) or tcp_connect, at `interval` seconds (2 is gdnsd's least),
    timeout 1 s, in multifo resources of 100 addresses."""
    plugin = "tcp_connect" if kind == "tcp" else "http_status"
    path = "" if kind == "tcp" else "\n    url_path => /health"
    out = [f"""options => {{
  listen => [ 127.0.0.1:@PORT@ ]
  run_dir => @DIR@/run
  state_dir => @DIR@/state
}}
service_types => {{
  c => {{
    plugin => {plugin}
    port => {port}{path}
    interval => {interval}, timeout => 1, down_thresh => 1, ok_thresh => 1, up_thresh => 2
  }}
}}
plugins => {{
  multifo => {{
    service_types => c
"""]
    for r, addrs in enumerate(address_groups(n)):
        out.append(f"    r{r} => {{ addrs_v4 => [ {', '.join(addrs)} ] }}\n")
    out.append("  }\n}\n")
    return "".join(out)

def records(n):
    out = [HEAD]
    for i in range(n):
        host, kind = i // 4, i % 4
        if kind == 0:
            rec = f'type = "A"\nvalue = "10.{host >> 16 & 255}.{host >> 8 & 255}.{host & 255}"'
        elif kind == 1:
            rec = f'type = "AAAA"\nvalue = "2001:db8::{host >> 16:x}:{host & 0xffff:x}"'
        elif kind == 2:
            rec = f'type = "TXT"\nvalue = "v=spf1 ip4:10.0.0.{host % 256} -all"'
        else:
            rec = f'type = "MX"\nvalue = "10 mail{host % 100}.scale.example."'
        out.append(f'\n[[record]]\nname = "host{host}"\n{rec}\n')
    return "".join(out)

if __name__ == "__main__":
    what, n = sys.argv[1], int(sys.argv[2])
    if what == "services":
        sys.stdout.write(services(n))
    elif what == "records":
        sys.stdout.write(records(n))
    elif what == "gdnsd":
        kind = sys.argv[3] if len(sys.argv) > 3 else "http-fresh"
        port = int(sys.argv[4]) if len(sys.argv) > 4 else 18090
        interval = int(sys.argv[5]) if len(sys.argv) > 5 else 2
        sys.stdout.write(gdnsd_config(n, kind, port, interval))
    elif what == "endpoints":
        kind = sys.argv[3] if len(sys.argv) > 3 else "http"
        port = int(sys.argv[4]) if len(sys.argv) > 4 else 18090
        ca_file = sys.argv[5] if len(sys.argv) > 5 else None
        sys.stdout.write(endpoints(n, kind, port, ca_file))
    else:
        sys.exit(__doc__)
