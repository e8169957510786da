#!/usr/bin/env python3
"""Closed-loop UDP load with a different EDNS Client Subnet per query
(dnsperf sends one fixed option for a whole run).

    bench/ecs-load.py PORT NAME SECONDS [--no-ecs] [--subnets N] [--window W] [--count C]

Queries NAME (type A) at 127.0.0.1:PORT for SECONDS, keeping W queries
outstanding, each carrying the next of N distinct /24 client subnets drawn
once (seed 7) from the public IPv4 space, so a geo service sees as many
database networks as real resolver traffic does. Prints one line:
`sent N answered N`. The server's CPU time is measured by the caller.
`--count C` stops after C answers (for instruction counts under callgrind).
"""
import random
import select
import socket
import struct
import sys
import time


def subnets(n):
    rng = random.Random(7)
    out = set()
    while len(out) < n:
        a = rng.randrange(1, 224)
        if a in (10, 127):
            continue
        out.add((a, rng.randrange(256), rng.randrange(256)))
    return sorted(out)


def packet(qid, name, net):
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 1)
    for label in name.encode().split(b"."):
        if label:
            q += bytes([len(label)]) + label
    q += b"\x00" + struct.pack(">HH", 1, 1)
    opt = b""
    if net is not None:
        data = struct.pack(">HBB", 1, 24, 0) + bytes(net)
        opt = struct.pack(">HH", 8, len(data)) + data
    # OPT: root, type 41, payload 1232, no flags.
    return q + b"\x00" + struct.pack(">HHIH", 41, 1232, 0, len(opt)) + opt


def main():
    args = sys.argv[1:]
    port, name, secs = int(args[0]), args[1], float(args[2])
    ecs = "--no-ecs" not in args
    n = int(args[args.index("--subnets") + 1]) if "--subnets" in args else 10000
    window = int(args[args.index("--window") + 1]) if "--window" in args else 64
    count = int(args[args.index("--count") + 1]) if "--count" in args else None
    nets = subnets(n) if ecs else [None]
    # Pre-built packets; the ID is patched per send.
    packets = [bytearray(packet(0, name, net)) for net in nets]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    sent = answered = 0
    outstanding = 0
    i = 0
    end = time.monotonic() + secs
    last_progress = time.monotonic()
    while time.monotonic() < end and (count is None or answered < count):
        while outstanding < window and (count is None or sent < count):
            p = packets[i % len(packets)]
            p[0:2] = struct.pack(">H", i & 0xFFFF)
            try:
                s.send(p)
            except BlockingIOError:
                break
            i += 1
            sent += 1
            outstanding += 1
        r, _, _ = select.select([s], [], [], 0.05)
        if r:
            while True:
                try:
                    s.recv(2048)
                except BlockingIOError:
                    break
                answered += 1
                outstanding -= 1
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > 0.2:
            outstanding = 0  # lost: refill the window
    print(f"sent {sent} answered {answered}")


if __name__ == "__main__":
    main()
