"""The compose lab (docker/compose.yml) brought up on the engine, every
part of it but Grafana (not packaged by Debian: checked with `docker
compose config`). Through the lab's Unbound resolver, to which the zone is
delegated: the primary answered; its container stopped, the answer moves
to the secondary, and the resolver follows within the TTL of the nodes'
change; Prometheus sees all three nodes up and fires the region-down alert;
one node cut from the etcd network keeps answering what the others answer
(by the cluster's documented rules: `local` mode, its own verdicts) and
returns to the cluster when reconnected."""

import time
import unittest

from support import (ROOT, addresses, build_gslb_image, docker, http_json,
                     run, wait_for)

COMPOSE = ["docker", "compose", "-f", str(ROOT / "docker/compose.yml")]
PROJECT = "gslb-lab"
NODES = {"ns1": "10.53.0.11", "ns2": "10.53.0.12", "ns3": "10.53.0.13"}
RESOLVER = "10.53.0.2"
PROMETHEUS = "http://10.53.0.3:9090"
US, EU = ("10.53.0.21",), ("10.53.0.22",)
NAME = "api.gslb.example.com"
TTL = 5  # docker/lab/zones: service api
# Everything but Grafana.
SERVICES = ["etcd1", "etcd2", "etcd3", "ns1", "ns2", "ns3", "backend-us-east",
            "backend-eu-west", "backend-ap-south", "resolver", "prometheus"]


def compose(*args, **kw):
    return run(*COMPOSE, *args, cwd=ROOT, **kw)


def answers():
    """(each node's answer, the resolver's), asked at once."""
    return {n: addresses(ip, NAME) for n, ip in NODES.items()}, addresses(RESOLVER, NAME)


def mode(node):
    try:
        return http_json(f"http://{NODES[node]}:9153/api/v1/status")["cluster"]["mode"]
    except OSError:
        return None


def prom(query):
    import urllib.parse
    url = f"{PROMETHEUS}/api/v1/query?query={urllib.parse.quote(query)}"
    try:
        return http_json(url)["data"]["result"]
    except OSError:
        return []


class Timeline:
    """Every poll of the nodes and the resolver, with its time, kept so the
    assertions can speak of all of it."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.rows = []

    def poll(self):
        nodes, resolver = answers()
        row = (time.monotonic() - self.t0, nodes, resolver)
        self.rows.append(row)
        return row

    def until(self, what, cond, timeout):
        return wait_for(what, lambda: cond(self.poll()), timeout, every=0.25)

    def show(self):
        return "\n".join(f"  {t:6.2f}s {n} resolver={r}" for t, n, r in self.rows)


class Lab(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        build_gslb_image()
        compose("config", "-q")  # the whole file, Grafana included
        compose("build", *[s for s in SERVICES if not s.startswith("ns")])
        compose("down", "-v", "--remove-orphans", check=False)
        compose("up", "-d", "--no-build", *SERVICES)

    @classmethod
    def tearDownClass(cls):
        if not cls._outcome_ok():
            print(compose("logs", "--no-color", "--tail", "60", "ns1", "ns2", "ns3",
                          check=False).stdout[-8000:])
        compose("down", "-v", "--remove-orphans", check=False)

    @classmethod
    def _outcome_ok(cls):
        return getattr(cls, "passed", False)

    def test_lab(self):
        tl = Timeline()
        # Up: every node in the cluster, every answer the primary's.
        for n in NODES:
            wait_for(f"{n} in cluster mode", lambda n=n: mode(n) == "cluster", 60, every=0.5)
        tl.until("the primary from every node and the resolver",
                 lambda r: all(a == US for a in r[1].values()) and r[2] == US, 60)

        # Prometheus scrapes all three, each its own instance.
        up = wait_for("up == 1 for three nodes",
                      lambda: (lambda r: r if len(r) == 3 and all(x["value"][1] == "1" for x in r) else None)(
                          prom('up{job="gslb"}')), 60, every=1)
        self.assertEqual(sorted(x["metric"]["instance"] for x in up),
                         ["ns1:9153", "ns2:9153", "ns3:9153"])

        # The primary's container stops.
        tl = Timeline()
        tl.poll()
        compose("stop", "-t", "0", "backend-us-east")
        stopped = time.monotonic() - tl.t0
        tl.until("the secondary everywhere",
                 lambda r: all(a == EU for a in r[1].values()) and r[2] == EU, 60)
        for _ in range(8):  # and it stays
            tl.poll()
            time.sleep(0.25)
        rows = tl.rows
        msg = "\n" + tl.show()
        # Every poll: an answer (never none), the primary or the secondary;
        # each node and the resolver move once, primary -> secondary.
        for _, nodes, res in rows:
            for a in [*nodes.values(), res]:
                self.assertIn(a, (US, EU), msg)

        def switch(series):
            firsts = [i for i, a in enumerate(series) if a == EU]
            self.assertTrue(firsts, msg)
            self.assertTrue(all(a == EU for a in series[firsts[0]:]), "moved back" + msg)
            return rows[firsts[0]][0]

        node_switch = max(switch([r[1][n] for r in rows]) for n in NODES)
        resolver_switch = switch([r[2] for r in rows])
        self.assertGreater(node_switch, stopped, msg)
        self.assertLessEqual(resolver_switch - node_switch, TTL + 1.0,
                             "the resolver kept the old answer longer than its TTL" + msg)
        print(f"\n  stop at {stopped:.2f}s, nodes switched by {node_switch:.2f}s, "
              f"resolver by {resolver_switch:.2f}s", flush=True)

        # The region-down alert fires (for: 1m), on every node's series.
        firing = wait_for(
            "GslbRegionDown firing for us-east on three instances",
            lambda: (lambda r: r if len(r) == 3 else None)(
                prom('ALERTS{alertname="GslbRegionDown",alertstate="firing",region="us-east"}')),
            150, every=2)
        self.assertEqual(sorted(x["metric"]["instance"] for x in firing),
                         ["ns1:9153", "ns2:9153", "ns3:9153"])

        # ns3 cut from the etcd network: it goes to its own verdicts
        # (`local`, after lease-ttl) and answers what the others answer,
        # on every poll.
        net = f"{PROJECT}_etcd"
        ns3 = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                     "--filter", "label=com.docker.compose.service=ns3").stdout.strip()
        docker("network", "disconnect", net, ns3)
        tl = Timeline()
        wait_for("ns3 in local mode", lambda: (tl.poll(), mode("ns3") == "local")[1], 30, every=0.25)
        # Cut off, and then alone: ns3 answers what ns1 and ns2 answer, on
        # every poll.
        for _, nodes, res in tl.rows:
            self.assertEqual(set(nodes.values()) | {res}, {EU}, "\n" + tl.show())
        # The primary returns while ns3 is alone: the cluster (ns1, ns2)
        # and ns3 each decide it up again, by the same fall/rise (for a
        # moment they may differ, each moving once).
        compose("start", "backend-us-east")
        tl.until("the primary again everywhere",
                 lambda r: all(a == US for a in r[1].values()) and r[2] == US, 60)
        for _, nodes, res in tl.rows:
            for a in [*nodes.values(), res]:
                self.assertIn(a, (US, EU), "\n" + tl.show())
        # Reconnected: back in the cluster, and nothing moves.
        docker("network", "connect", net, ns3)
        wait_for("ns3 back in cluster mode", lambda: (tl.poll(), mode("ns3") == "cluster")[1],
                 60, every=0.25)
        n = len(tl.rows)
        for _ in range(8):
            tl.poll()
            time.sleep(0.25)
        for _, nodes, res in tl.rows[n - 1:]:
            self.assertEqual(set(nodes.values()) | {res}, {US}, "\n" + tl.show())
        type(self).passed = True


if __name__ == "__main__":
    unittest.main()
