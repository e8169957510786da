"""What the container tests share: running commands, asking DNS with dig,
waiting on conditions (never fixed sleeps) and reading the project's facts.

The tests drive a real Docker engine (Debian's docker.io, started by
scripts/test) with images built from the repository's own Dockerfiles.
"""

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args, check=True, timeout=1800, **kw):
    """Run a command; on failure raise with its output."""
    p = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {p.returncode}\n"
            f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
        )
    return p


def docker(*args, **kw):
    return run("docker", *args, **kw)


def inspect(obj, fmt):
    return docker("inspect", "-f", fmt, obj).stdout.strip()


def container_ip(name, timeout=10):
    """The address of a running container on Docker's default bridge; a
    container that exited fails the test with its log."""
    def ip():
        if inspect(name, "{{.State.Running}}") != "true":
            logs = docker("logs", name, check=False)
            raise AssertionError(f"container {name} is not running:\n{logs.stdout}{logs.stderr}")
        return inspect(name, "{{.NetworkSettings.IPAddress}}")
    return wait_for(f"the address of {name}", ip, timeout)


def dig(server, name, qtype="A", port=53, tcp=False):
    """The answer section as [(name, ttl, type, value)]; None when dig got
    no answer at all (timeout) or a status other than NOERROR."""
    args = [
        "dig", f"@{server}", "-p", str(port), name, qtype,
        "+tries=1", "+time=1", "+noall", "+answer", "+comments",
    ]
    if tcp:
        args.append("+tcp")
    p = run(*args, check=False, timeout=10)
    if p.returncode != 0 or "status: NOERROR" not in p.stdout:
        return None
    out = []
    for line in p.stdout.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        f = line.split(None, 4)
        out.append((f[0], int(f[1]), f[3], f[4]))
    return out


def addresses(server, name, port=53):
    """The sorted A values of an answer, or None (no answer)."""
    ans = dig(server, name, port=port)
    if ans is None:
        return None
    return tuple(sorted(v for (_, _, t, v) in ans if t == "A"))


def wait_for(what, cond, timeout, every=0.2):
    """Poll `cond` until it returns a true value; that value, or fail saying
    what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}; last: {last!r}")
        time.sleep(every)


def http_json(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def cargo_package():
    """(version, license) from Cargo.toml."""
    text = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    license = re.search(r'^license = "([^"]+)"', text, re.M).group(1)
    return version, license


def build_gslb_image():
    """Build docker/Dockerfile as the compose file names it (gslb:latest)
    and as the Kubernetes manifests do (gslb:VERSION). Once per run: the
    tests share it."""
    version, _ = cargo_package()
    if not getattr(build_gslb_image, "done", False):
        docker("build", "-q", "-f", "docker/Dockerfile", "-t", "gslb:latest",
               "-t", f"gslb:{version}", ".", cwd=ROOT)
        build_gslb_image.done = True
    return "gslb:latest"
