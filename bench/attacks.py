#!/usr/bin/env python3
"""Attacks and legitimate traffic side by side (issue 19 items 1, 4, 5),
against a running gslb. Standard library only.

  attacks.py admin DNS_HOST ADMIN_PORT SECONDS
      64 connections from 127.0.0.66 each sending half a request head and
      reconnecting as soon as they are closed, and 4 connections with 200
      pipelined GET /metrics never read; meanwhile, from 127.0.0.1, a
      /metrics scrape and a drain/undrain every 100 ms (2 s timeout each).
  attacks.py rrl DNS_PORT SECONDS
      from 127.0.0.1, a flood of one name (mail.gslb.example.com A) as
      fast as one socket sends; meanwhile, from the same address (the
      resolver the spoofer aims at), another name (static) 20 times a second.
  attacks.py loris DNS_PORT SECONDS
      80 TCP connections from ten /24s (127.20.N.1), each sending query
      after query a byte at a time (never idle); meanwhile, 20 TCP queries a
      second from other /24s (127.30.N.1), each on a new connection.

Prints one line per side: what the attacker sent, what the legitimate
client got.
"""
import asyncio
import socket
import statistics
import struct
import sys
import time


def query(name, qtype=1, qid=0):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)


def summary(lat):
    if not lat:
        return "none"
    lat = sorted(lat)
    return f"p50 {statistics.median(lat) * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"


async def http_call(host, port, method, path, src="127.0.0.1", timeout=2.0):
    start = time.monotonic()
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(src, 0)), timeout)
        w.write(f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Gslb-Request: bench\r\n"
                f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await w.drain()
        head = await asyncio.wait_for(r.readline(), timeout - (time.monotonic() - start))
        await asyncio.wait_for(r.read(), max(0.1, timeout - (time.monotonic() - start)))
        w.close()
        return head.startswith(b"HTTP/1.1 200"), time.monotonic() - start
    except (OSError, asyncio.TimeoutError):
        return False, time.monotonic() - start


async def admin(host, port, seconds):
    stop = time.monotonic() + seconds
    opened = [0, 0]

    async def half_head():
        while time.monotonic() < stop:
            try:
                r, w = await asyncio.open_connection(host, port, local_addr=("127.0.0.66", 0))
                opened[0] += 1
                w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                await w.drain()
                await asyncio.wait_for(r.read(64), max(0.05, stop - time.monotonic()))
                w.close()
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.01)

    async def pipeline():
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=("127.0.0.66", 0))
            opened[1] += 1
            w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
            await asyncio.sleep(max(0, stop - time.monotonic()))
            w.close()
        except OSError:
            pass

    async def legit():
        scrapes, drains = [], []
        i = 0
        while time.monotonic() < stop:
            scrapes.append(await http_call(host, port, "GET", "/metrics"))
            action = "drain" if i % 2 == 0 else "undrain"
            drains.append(await http_call(host, port, "POST", f"/api/v1/regions/_/fallback/{action}"))
            i += 1
            await asyncio.sleep(0.1)
        return scrapes, drains

    tasks = [asyncio.create_task(half_head()) for _ in range(64)]
    tasks += [asyncio.create_task(pipeline()) for _ in range(4)]
    scrapes, drains = await legit()
    await asyncio.gather(*tasks, return_exceptions=True)
    ok = lambda xs: sum(1 for good, _ in xs if good)
    print(f"attacker: {opened[0]} half-head connections (64 at a time, reconnecting), "
          f"{opened[1]} x 200 pipelined requests never read")
    print(f"legitimate: /metrics {ok(scrapes)} of {len(scrapes)} answered "
          f"({summary([t for good, t in scrapes if good])}); drain/undrain {ok(drains)} of {len(drains)}")


def rrl(port, seconds):
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.1", 0))
    flood.setblocking(False)
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    victim.settimeout(0.05)
    fq = query("mail.gslb.example.com", 1, 1)
    stop = time.monotonic() + seconds
    sent = got = 0
    asked = answered = truncated = 0
    next_victim = time.monotonic()
    while time.monotonic() < stop:
        for _ in range(200):
            try:
                flood.sendto(fq, ("127.0.0.1", port))
                sent += 1
            except BlockingIOError:
                break
        try:
            while True:
                flood.recv(1500)
                got += 1
        except BlockingIOError:
            pass
        if time.monotonic() >= next_victim:
            next_victim += 0.05
            asked += 1
            victim.sendto(query("static.gslb.example.com", 1, asked & 0xFFFF), ("127.0.0.1", port))
            try:
                reply = victim.recv(1500)
                if reply[2] & 0x02:
                    truncated += 1
                else:
                    answered += 1
            except socket.timeout:
                pass
    print(f"attacker: {sent} queries for one name from 127.0.0.1 in {seconds} s, "
          f"{got} responses came back (full or truncated)")
    print(f"legitimate (same address, another name): {answered} of {asked} answered in full, "
          f"{truncated} truncated (TC: retry over TCP), {asked - answered - truncated} lost")


async def loris(port, seconds):
    stop = time.monotonic() + seconds
    q = query("static.gslb.example.com")
    framed = struct.pack(">H", len(q)) + q
    trickled = [0, 0]

    async def attacker(n):
        src = f"127.20.{n % 10}.1"
        while time.monotonic() < stop:
            try:
                r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
                trickled[0] += 1
                while time.monotonic() < stop:
                    w.write(framed[:2])
                    for b in framed[2:]:
                        await asyncio.sleep(1.5 / len(q))
                        w.write(bytes([b]))
                        await w.drain()
                    ln = struct.unpack(">H", await r.readexactly(2))[0]
                    await r.readexactly(ln)
                    trickled[1] += 1
            except (OSError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)

    async def legit():
        results = []
        i = 0
        while time.monotonic() < stop:
            src = f"127.30.{i % 200}.1"
            i += 1
            start = time.monotonic()
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 2)
                w.write(framed)
                await w.drain()
                ln = struct.unpack(">H", await asyncio.wait_for(r.readexactly(2), 2))[0]
                await asyncio.wait_for(r.readexactly(ln), 2)
                w.close()
                results.append((True, time.monotonic() - start))
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                results.append((False, time.monotonic() - start))
            await asyncio.sleep(0.05)
        return results

    tasks = [asyncio.create_task(attacker(n)) for n in range(80)]
    await asyncio.sleep(2)  # every slot taken first
    results = await legit()
    await asyncio.gather(*tasks, return_exceptions=True)
    ok = [t for good, t in results if good]
    print(f"attacker: 80 connections from ten /24s, {trickled[0]} opened in all, "
          f"{trickled[1]} queries sent a byte at a time")
    print(f"legitimate (other /24s, a new connection each): {len(ok)} of {len(results)} answered ({summary(ok)})")


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "admin":
        asyncio.run(admin(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    elif what == "rrl":
        rrl(int(sys.argv[2]), float(sys.argv[3]))
    elif what == "loris":
        asyncio.run(loris(int(sys.argv[2]), float(sys.argv[3])))
    else:
        sys.exit(__doc__)
