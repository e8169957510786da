"""The image docker/Dockerfile builds, run the way its comment says:
small, non-root, labelled, serving a mounted zones folder over UDP and TCP,
healthy by its own HEALTHCHECK, reloading on SIGHUP (and keeping the last
good zones when the new ones are bad), stopping on SIGTERM at once."""

import shutil
import tempfile
import time
import unittest
from pathlib import Path

from support import (ROOT, addresses, build_gslb_image, cargo_package,
                     container_ip, dig, docker, inspect, run, wait_for)

ZONE = """
[zone]
name = "smoke.test."
nameservers = ["ns1.smoke.test."]
hostmaster = "hostmaster.smoke.test."

[[record]]
name = "ns1"
type = "A"
value = "192.0.2.53"

[[record]]
name = "static"
type = "A"
value = "192.0.2.10"

# The region's endpoint is the container's own admin listener: a real HTTP
# probe with a real verdict, and no second container.
[check.self]
type = "http"
port = 9153
path = "/healthz"
expect-body = "ok"
interval = "1s"
timeout = "500ms"
fall = 2
rise = 1

[region.here]
endpoints = ["127.0.0.1"]
check = "self"

[service.api]
policy = "failover"
regions = ["here"]
ttl = 7
"""

NEW_RECORD = """
[[record]]
name = "added"
type = "A"
value = "192.0.2.99"
"""


class Image(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.image = build_gslb_image()
        cls.dir = Path(tempfile.mkdtemp(prefix="gslb-smoke-"))
        (cls.dir / "zones").mkdir()
        (cls.dir / "zones" / "smoke.test.toml").write_text(ZONE)
        # The container's user reads the mounted folder.
        for p in [cls.dir, cls.dir / "zones", *(cls.dir / "zones").iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        cls.name = f"gslb-smoke-{int(time.time())}"

    @classmethod
    def tearDownClass(cls):
        docker("rm", "-f", "-v", cls.name, check=False)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_1_image_facts(self):
        size = int(inspect(self.image, "{{.Size}}"))
        self.assertLess(size, 25_000_000, f"image is {size} bytes")
        version, license = cargo_package()
        labels = {
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.licenses": license,
            "org.opencontainers.image.source": "https://github.com/gslb/gslb",
        }
        for k, v in labels.items():
            self.assertEqual(inspect(self.image, f'{{{{index .Config.Labels "{k}"}}}}'), v, k)
        self.assertEqual(inspect(self.image, "{{.Config.User}}"), "65532:65532")
        self.assertEqual(
            inspect(self.image, "{{json .Config.Healthcheck.Test}}"),
            '["CMD","/usr/bin/gslb","ready"]',
        )
        ports = inspect(self.image, "{{json .Config.ExposedPorts}}")
        for p in ("53/udp", "53/tcp", "9153/tcp"):
            self.assertIn(f'"{p}"', ports)
        self.assertIn("/var/lib/gslb", inspect(self.image, "{{json .Config.Volumes}}"))
        # The manifests run the same image, by its version.
        k8s = (ROOT / "docker/kubernetes/statefulset.yaml").read_text()
        self.assertIn(f"image: gslb:{version}", k8s)
        df = (ROOT / "docker/Dockerfile").read_text()
        self.assertIn(f"ARG VERSION={version}\n", df)

    def test_2_serves_reloads_and_stops(self):
        # Hardened the way the Dockerfile's comment says: no capability but
        # the one, read-only root.
        docker(
            "run", "-d", "--name", self.name, "--read-only",
            "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE",
            "-v", f"{self.dir / 'zones'}:/etc/gslb/zones:ro", self.image,
        )
        ip = container_ip(self.name)

        # Not root, from the host's view of the process.
        pid = inspect(self.name, "{{.State.Pid}}")
        uid = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:2]
        self.assertEqual(uid, ["65532", "65532"])

        # The mounted zone over UDP and over TCP on port 53.
        wait_for("a UDP answer", lambda: addresses(ip, "static.smoke.test") == ("192.0.2.10",), 20)
        tcp = dig(ip, "static.smoke.test", tcp=True)
        self.assertEqual([(n, t, v) for (n, _, t, v) in tcp],
                         [("static.smoke.test.", "A", "192.0.2.10")])
        # The service, healthy on its real probe: its normal TTL.
        ans = wait_for("api healthy (TTL 7)",
                       lambda: [r for r in (dig(ip, "api.smoke.test") or []) if r[1] == 7], 20)
        self.assertEqual(ans[0][3], "127.0.0.1")

        # Docker's own health check, which runs `gslb ready` in the image.
        wait_for("docker health 'healthy'",
                 lambda: inspect(self.name, "{{.State.Health.Status}}") == "healthy", 60, every=1)
        out = docker("exec", self.name, "/usr/bin/gslb", "ready").stdout
        self.assertEqual(out.strip(), "ready")

        # SIGHUP reloads: a record added to the mounted file is served.
        zone = self.dir / "zones" / "smoke.test.toml"
        zone.write_text(ZONE + NEW_RECORD)
        docker("kill", "-s", "HUP", self.name)
        wait_for("the added record after SIGHUP",
                 lambda: addresses(ip, "added.smoke.test") == ("192.0.2.99",), 10)

        # A bad zone on SIGHUP: rejected with file:line:column, the last good
        # zones stay served, the container keeps running.
        zone.write_text(ZONE + NEW_RECORD + '\n[[record]]\nname = "x"\ntype = "A"\nvalue = "not-an-address"\n')
        docker("kill", "-s", "HUP", self.name)
        wait_for("the rejection in the log",
                 lambda: "smoke.test.toml:" in docker("logs", self.name).stderr
                 and "not-an-address" in docker("logs", self.name).stderr, 10)
        logs = docker("logs", self.name).stderr
        self.assertRegex(logs, r"smoke\.test\.toml:\d+:\d+")
        self.assertEqual(addresses(ip, "added.smoke.test"), ("192.0.2.99",))
        self.assertEqual(inspect(self.name, "{{.State.Running}}"), "true")

        # SIGTERM stops it: with one second of grace, docker would SIGKILL
        # (exit 137) a process that did not stop; gslb exits 0 on its own.
        t0 = time.monotonic()
        docker("stop", "-t", "1", self.name)
        took = time.monotonic() - t0
        self.assertEqual(inspect(self.name, "{{.State.ExitCode}}"), "0",
                         f"not stopped by SIGTERM within 1 s (took {took:.2f} s)")
        self.assertEqual(inspect(self.name, "{{.State.OOMKilled}}"), "false")
        print(f"\n  docker stop took {took:.2f} s", flush=True)

    def test_3_the_binarys_one_capability(self):
        # Where any user may bind low ports (Docker's default) the file
        # capability is not needed; take that away and it must do the work.
        name = f"{self.name}-cap"
        (self.dir / "zones" / "smoke.test.toml").write_text(ZONE)
        try:
            docker("run", "-d", "--name", name,
                   "--sysctl", "net.ipv4.ip_unprivileged_port_start=1024",
                   "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE",
                   "-v", f"{self.dir / 'zones'}:/etc/gslb/zones:ro", self.image)
            ip = container_ip(name)
            wait_for("an answer on port 53 bound by the file capability",
                     lambda: addresses(ip, "static.smoke.test") is not None, 20)
        finally:
            docker("rm", "-f", "-v", name, check=False)
        # A container that forbids that capability cannot run the binary:
        # the kernel refuses the exec (as the README says).
        p = docker("run", "--rm", "--cap-drop", "ALL", self.image, "--version", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("operation not permitted", p.stdout + p.stderr)

    def test_3b_lint(self):
        for f in ("docker/Dockerfile", "docker/lab/Dockerfile"):
            run("hadolint", f, cwd=ROOT)

    def test_4_kubernetes_manifests(self):
        manifests = sorted(str(p) for p in (ROOT / "docker/kubernetes").glob("*.yaml"))
        self.assertGreaterEqual(len(manifests), 5)
        run("kubernetes-validate", "--strict", "--quiet", *manifests)
        # The settings and zones they carry are ones gslb accepts.
        import yaml  # noqa: PLC0415 (PyYAML: a kubernetes-validate dependency)
        d = Path(tempfile.mkdtemp(prefix="gslb-k8s-"))
        try:
            (d / "zones").mkdir()
            for doc in yaml.safe_load_all((ROOT / "docker/kubernetes/configmap.yaml").read_text()):
                for k, v in doc["data"].items():
                    (d / ("zones" if doc["metadata"]["name"] == "gslb-zones" else ".") / k).write_text(v)
            for p in [d, d / "zones", d / "gslb.toml", *(d / "zones").iterdir()]:
                p.chmod(0o755 if p.is_dir() else 0o644)
            docker("run", "--rm",
                   "-v", f"{d / 'gslb.toml'}:/etc/gslb/gslb.toml:ro",
                   "-v", f"{d / 'zones'}:/etc/gslb/zones:ro",
                   build_gslb_image(), "check", "--config", "/etc/gslb/gslb.toml", "/etc/gslb/zones")
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
