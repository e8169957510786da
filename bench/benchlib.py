"""Shared by the Python bench scripts: the two-region failover zone they
serve, a minimal DNS A query over UDP, and a free port."""
import random
import socket
import struct


def failover_zone(primary_port, secondary_port):
    """`api.gslb.example.com`: failover from primary (127.0.0.2) to
    secondary (127.0.0.3), each checked over HTTP on its own port: interval
    1 s, timeout 500 ms, fall 3, rise 2, recheck 200 ms (as bench/zones)."""
    def check(name, port):
        return (f'[check.{name}]\ntype = "http"\nport = {port}\npath = "/health"\n'
                'interval = "1s"\ntimeout = "500ms"\nrecheck = "200ms"\n\n')
    return ('[zone]\nname = "gslb.example.com."\nnameservers = ["ns1.gslb.example.com."]\n'
            'hostmaster = "hostmaster.example.com."\n\n'
            '[[record]]\nname = "ns1"\ntype = "A"\nvalue = "127.0.0.1"\n\n'
            '[[record]]\nname = "static"\ntype = "A"\nvalue = "192.0.2.10"\n\n'
            + check("primary", primary_port) + check("secondary", secondary_port)
            + '[region.primary]\nendpoints = ["127.0.0.2"]\ncheck = "primary"\n\n'
            '[region.secondary]\nendpoints = ["127.0.0.3"]\ncheck = "secondary"\n\n'
            '[service.api]\nregions = ["primary", "secondary"]\nttl = 30\n')


def query_a(port, name="api.gslb.example.com"):
    """The address of a one-A answer from 127.0.0.1:port, or None."""
    q = struct.pack(">HHHHHH", random.randrange(65536), 0, 1, 0, 0, 0)
    for label in name.encode().split(b"."):
        q += bytes([len(label)]) + label
    q += b"\x00" + struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    try:
        s.sendto(q, ("127.0.0.1", port))
        r = s.recv(512)
    except OSError:
        return None
    finally:
        s.close()
    # The last 4 bytes of a one-A answer are the address.
    return ".".join(str(b) for b in r[-4:]) if len(r) > 4 else None


def free_port():
    """A loopback port free for both TCP and UDP (for a server process
    that cannot report the port it bound)."""
    while True:
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            pass
        finally:
            t.close()
            u.close()
