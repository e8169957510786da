#!/usr/bin/env python3
"""Write a small MaxMind DB (.mmdb) test database from a JSON spec.

    python3 tests/geo/mmdb.py SPEC.json OUT.mmdb

SPEC.json maps networks to records, every part of a record optional:

    {"192.0.2.0/24":    {"country": "US", "continent": "NA", "lat": 39.0, "lon": -77.5},
     "2001:db8:1::/48": {"country": "FR", "continent": "EU"},
     "100.64.0.0/16":   {"continent": "SA"}}

Each is stored GeoIP2-City-shaped: {"country": {"iso_code": ..},
"continent": {"code": ..}, "location": {"latitude": .., "longitude": ..}}
(doubles), absent parts left out. The tree is IPv6 (ip_version 6) with IPv4
at ::a.b.c.d (::/96, MaxMind's convention; mmdb-writer's ipv4_compatible),
so readers find IPv4 addresses with their IPv4 prefix length. Only
::a.b.c.d is written: ::ffff:a.b.c.d (IPv4-mapped) is not aliased to it.

Licences: this script is the project's (Apache-2.0). It needs
mmdb-writer (MIT) and netaddr (BSD-3-Clause) from PyPI, which scripts/test
installs; neither is vendored. The databases hold only the made-up
test data of the spec, no MaxMind data; they are written to temporary
files by the tests and never committed.
"""
import json
import sys

from mmdb_writer import MMDBWriter
from netaddr import IPNetwork, IPSet


def record(spec):
    unknown = set(spec) - {"country", "continent", "lat", "lon"}
    if unknown:
        raise SystemExit(f"unknown keys {sorted(unknown)} in {spec}")
    rec = {}
    if "country" in spec:
        rec["country"] = {"iso_code": spec["country"]}
    if "continent" in spec:
        rec["continent"] = {"code": spec["continent"]}
    if "lat" in spec or "lon" in spec:
        # float(): a JSON 39 would otherwise be stored as an integer.
        rec["location"] = {"latitude": float(spec["lat"]), "longitude": float(spec["lon"])}
    return rec


def main(spec_path, out_path):
    with open(spec_path) as f:
        spec = json.load(f)
    nets = [(IPNetwork(cidr), rec) for cidr, rec in spec.items()]
    # Supernets first: mmdb-writer replaces whatever lies under a network
    # inserted after it. IPv4 prefixes count 96 more bits in the IPv6 tree.
    nets.sort(key=lambda n: n[0].prefixlen + (96 if n[0].version == 4 else 0))
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City",
                        languages=["en"], description="gslb test database")
    for net, rec in nets:
        writer.insert_network(IPSet([net]), record(rec))
    writer.to_db_file(out_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
