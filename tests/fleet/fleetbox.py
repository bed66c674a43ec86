"""A fleet with real parts: two poold hosts behind HAProxy, a log host, and
clients, each in a network namespace of this test's own on one bridge.

Addresses (10.77.0.0/24, a private range that exists only inside these
namespaces; nothing here touches the machine's own interfaces):

    10.77.0.1         lb: HAProxy, run directly in its namespace (frontend
                      :2727, backend bk with h1 and h2, send-proxy-v2, checks
                      with a v2 LOCAL header, stats socket at level admin;
                      frontend :2443 terminating TLS with a self-signed
                      certificate made here, backend bk_tls with
                      send-proxy-v2-ssl, its servers tracking bk's)
    10.77.0.21, .22   h1, h2: containers booted with the real systemd
                      (tests/lib/container.py), poold.socket on 2727, poold
                      taking PROXY v2 from 10.77.0.1 only, per_source = 2,
                      systemd-journal-upload to the log host
    10.77.0.30        log: a container running systemd-journal-remote.socket
                      on 19532 (plain HTTP) into /var/log/journal/remote/
    10.77.0.11 .. .14 cl: the clients, four source addresses on one veth

The bridge (br0) lives in a namespace of its own; each other namespace has
one veth ("eth0") into it. Namespaces are named poold-fleet-PID-NAME, so two
runs never collide, and all of them are deleted on close.

API
---
    from fleetbox import Fleet
    with Fleet(stage, workdir) as f:       # builds it all; waits for h1, h2 UP
        f.hosts["h1"]                      # a tests/lib/box.py Box
        f.log                              # the log host's Box
        f.lb("show stat")                  # a stats socket command -> text
        f.servers()                        # {"h1": {"status": "UP", "stot": 3, ...}, ...}
        f.client("loop", "--count", "10", ...)   # tests/fleet/client.py -> JSON
        f.spawn_client(...)                # the same in the background (Popen)
"""
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, os.path.join(REPO, "tests", "system"))

from common import TUTORIAL_PAYLOAD, wait_until  # noqa: E402
from sysbox import boot_box  # noqa: E402

SUBNET = "10.77.0.0/24"
LB = "10.77.0.1"
HOSTS = {"h1": "10.77.0.21", "h2": "10.77.0.22"}
LOGHOST = "10.77.0.30"
CLIENTS = ["10.77.0.11", "10.77.0.12", "10.77.0.13", "10.77.0.14"]
PORT = 2727
TLS_PORT = 2443
TLS_NAME = "poold.test"
LOG_PORT = 19532

HAPROXY = "/usr/sbin/haproxy"
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
JOURNAL_UPLOAD = "/lib/systemd/systemd-journal-upload"

# poold on each host: poold.socket's fd is named "poold", so [listener poold]
# holds its settings. Only HAProxy may send the header; every client is
# counted by its real address.
POOLD_CONF = """# tests/fleet: poold behind HAProxy (send-proxy-v2)
[listener poold]
proxy_protocol = v2
proxy_from = %s
per_source = 2
""" % LB

# HAProxy as an operator would run it in front of the fleet:
# - send-proxy-v2 on each server: every connection starts with a v2 header
#   naming the client; check-send-proxy: the health checks send one too,
#   with the LOCAL command (HAProxy's own connection), which poold serves
#   as a health check. The check expects the payload's first bytes (poold
#   serves, not just the kernel's queue of systemd's socket); timeout check
#   3s lets a check wait through a restart instead of failing it. inter
#   200ms, fall 2, rise 2: a dead host is out within about half a second.
# - retries 3 + option redispatch 1: a connection that fails (a host whose
#   socket is gone) is retried on another server, not lost.
# - the stats socket at level admin: `set server bk/h1 state drain`.
# - TLS terminated here (bind ... ssl crt), poold told so by
#   send-proxy-v2-ssl (the SSL TLV: POOLD_TLS_VERSION); bk_tls's servers
#   take bk's health (track) instead of checking the hosts twice.
HAPROXY_CFG = """global
    log stdout format raw local0 info
    stats socket {sock} mode 600 level admin
    maxconn 2000

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1

frontend fe
    bind {lb}:{port}
    default_backend bk

backend bk
    balance roundrobin
    option tcp-check
    tcp-check expect binary {expect}
    timeout check 3s
    default-server send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 2
{servers}

frontend fe_tls
    bind {lb}:{tls_port} ssl crt {pem}
    default_backend bk_tls

backend bk_tls
    balance roundrobin
{tls_servers}
"""

UPLOAD_CONF = "[Upload]\nURL=http://%s:%d\n" % (LOGHOST, LOG_PORT)

# The log host: the shipped socket (ListenStream=19532), the service told to
# speak plain HTTP on it (the default is --listen-https=-3).
REMOTE_DROPIN = """[Service]
ExecStart=
ExecStart=%s --listen-http=-3 --output=/var/log/journal/remote/
""" % JOURNAL_REMOTE


def support():
    """None when the fleet can be built here, else why not."""
    for tool, pkg in ((HAPROXY, "haproxy"), (JOURNAL_REMOTE, "systemd-journal-remote"),
                      (JOURNAL_UPLOAD, "systemd-journal-remote"), ("/usr/sbin/ip", "iproute2"),
                      ("/usr/bin/openssl", "openssl")):
        if not os.access(tool, os.X_OK):
            return "%s not installed (package %s)" % (tool, pkg)
    return None


def sh(argv, timeout=30, check=True, input=None):
    r = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), r.returncode,
                                                 r.stderr.decode(errors="replace")))
    return r.stdout.decode(errors="replace")


class Network:
    """Network namespaces PREFIX-NAME, each with one veth into a bridge that
    lives in PREFIX-br."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.made = []
        self.bridge = self.ns("br")

    def ns(self, name):
        return "%s-%s" % (self.prefix, name)

    def path(self, name):
        return "/run/netns/" + self.ns(name)

    def _add_ns(self, name):
        ns = self.ns(name)
        if os.path.exists("/run/netns/" + ns):  # left by a killed run with our PID
            sh(["ip", "netns", "del", ns], check=False)
        sh(["ip", "netns", "add", ns])
        self.made.append(ns)
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def start(self):
        self._add_ns("br")
        sh(["ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", self.bridge, "link", "set", "br0", "up"])

    def add(self, name, addrs):
        """A namespace on the bridge with these IPv4 addresses (/24) on eth0."""
        ns = self._add_ns(name)
        port = "v-" + name
        sh(["ip", "-n", self.bridge, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", ns])
        sh(["ip", "-n", self.bridge, "link", "set", port, "master", "br0", "up"])
        for a in addrs:
            sh(["ip", "-n", ns, "addr", "add", a + "/24", "dev", "eth0"])
        sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        return ns

    def exec_argv(self, name, argv):
        return ["ip", "netns", "exec", self.ns(name)] + list(argv)

    def close(self):
        errors = []
        for ns in reversed(self.made):
            pids = sh(["ip", "netns", "pids", ns], check=False).split()
            if pids:
                errors.append("%s still holds processes %s" % (ns, pids))
            sh(["ip", "netns", "del", ns], check=False)
        self.made = []
        if errors:
            raise RuntimeError("; ".join(errors))


class Fleet:
    def __init__(self, stage, workdir):
        self.stage = stage
        self.workdir = workdir
        self.prefix = "poold-fleet-%d" % os.getpid()
        self.net = Network(self.prefix)
        self.hosts = {}
        self.log = None
        self.haproxy = None
        self.sock = os.path.join(workdir, "haproxy.sock")
        self.haproxy_log = os.path.join(workdir, "haproxy.log")
        self.client_py = os.path.join(HERE, "client.py")
        self.tls_cert = os.path.join(workdir, "tls.crt")
        self._spawned = []
        self.timings = {}

    # ---- lifecycle -----------------------------------------------------------

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        t0 = time.monotonic()
        self.net.start()
        self.net.add("lb", [LB])
        self.net.add("log", [LOGHOST])
        for name, a in HOSTS.items():
            self.net.add(name, [a])
        self.net.add("cl", CLIENTS)
        self.timings["network"] = time.monotonic() - t0

        t = time.monotonic()
        self.log = boot_box(self.stage, enable_socket=False,
                            name=self.prefix + "-log", network_namespace=self.net.path("log"))
        self.log.c.write_file("/etc/systemd/system/systemd-journal-remote.service.d/http.conf",
                              REMOTE_DROPIN)
        self.log.sh("systemctl daemon-reload && systemctl enable --now systemd-journal-remote.socket")
        for name, a in HOSTS.items():
            b = boot_box(self.stage, enable_socket=False,
                         name="%s-%s" % (self.prefix, name), network_namespace=self.net.path(name))
            self.hosts[name] = b
            b.write_conf(POOLD_CONF, "/etc/poold/poold.conf.d/50-fleet.conf")
            b.c.write_file("/etc/systemd/journal-upload.conf.d/50-fleet.conf", UPLOAD_CONF)
            b.sh("systemctl enable --now poold.socket systemd-journal-upload.service")
        self.timings["containers"] = time.monotonic() - t

        t = time.monotonic()
        self.start_haproxy()
        def both_up():
            try:
                servers = self.servers()
            except OSError:  # the stats socket not answering yet
                return False
            return len(servers) == len(HOSTS) and all(s["status"] == "UP" for s in servers.values())
        wait_until(both_up, timeout=20, what="HAProxy's checks see h1 and h2 UP")
        self.timings["haproxy_up"] = time.monotonic() - t

    def start_haproxy(self):
        servers = "\n".join("    server %s %s:%d" % (n, a, PORT) for n, a in HOSTS.items())
        tls_servers = "\n".join("    server %s %s:%d send-proxy-v2-ssl track bk/%s" % (n, a, PORT, n)
                                for n, a in HOSTS.items())
        # A self-signed certificate for TLS_NAME; clients trust it as their CA.
        key, crt = os.path.join(self.workdir, "tls.key"), self.tls_cert
        sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + TLS_NAME,
            "-addext", "subjectAltName=DNS:" + TLS_NAME])
        pem = os.path.join(self.workdir, "tls.pem")
        with open(pem, "w") as f:
            f.write(open(crt).read() + open(key).read())
        cfg = os.path.join(self.workdir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CFG.format(sock=self.sock, lb=LB, port=PORT, servers=servers,
                                       expect=TUTORIAL_PAYLOAD[:4].hex(),
                                       tls_port=TLS_PORT, pem=pem, tls_servers=tls_servers))
        sh([HAPROXY, "-c", "-q", "-f", cfg])
        log = open(self.haproxy_log, "wb")
        try:
            # ip netns exec execs haproxy: this PID is haproxy's, ours to stop.
            self.haproxy = subprocess.Popen(self.net.exec_argv("lb", [HAPROXY, "-db", "-f", cfg]),
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        wait_until(lambda: self.haproxy.poll() is not None or os.path.exists(self.sock),
                   timeout=10, what="HAProxy's stats socket")
        if self.haproxy.poll() is not None:
            raise RuntimeError("haproxy exited %s:\n%s" % (self.haproxy.returncode, self.lb_log()))

    def close(self):
        errors = []
        for p in self._spawned:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait(10)
        for b in list(self.hosts.values()) + ([self.log] if self.log else []):
            try:
                b.c.stop()
            except Exception as e:  # keep stopping the others
                errors.append(str(e))
            finally:
                b.c.cleanup()
        self.hosts = {}
        self.log = None
        try:
            self.net.close()
        except Exception as e:
            errors.append(str(e))
        if errors:
            raise RuntimeError("fleet teardown: " + "; ".join(errors))

    # ---- HAProxy -------------------------------------------------------------

    def lb(self, command):
        """One command on HAProxy's stats socket; its answer."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(self.sock)
            s.sendall(command.encode() + b"\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        return data.decode(errors="replace")

    def servers(self, backend="bk"):
        """A backend's servers from `show stat`: {name: {status, stot, scur, ...}}."""
        text = self.lb("show stat").lstrip("# ")
        out = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == backend and row.get("svname") in HOSTS:
                row["stot"] = int(row["stot"] or 0)
                row["scur"] = int(row["scur"] or 0)
                out[row["svname"]] = row
        return out

    def set_state(self, server, state, wait=None):
        """set server bk/SERVER state STATE; wait= until its status is that."""
        answer = self.lb("set server bk/%s state %s" % (server, state)).strip()
        assert answer == "", "HAProxy said: %r" % answer
        if wait:
            wait_until(lambda: self.servers()[server]["status"] == wait, timeout=15,
                       what="bk/%s %s" % (server, wait))

    def lb_log(self):
        try:
            with open(self.haproxy_log, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    # ---- clients -------------------------------------------------------------

    def _client_argv(self, mode, *args):
        return self.net.exec_argv("cl", ["/usr/bin/python3", self.client_py, mode,
                                         "--expect-hex", TUTORIAL_PAYLOAD.hex()] + list(args))

    def client(self, mode, *args, timeout=120):
        out = sh(self._client_argv(mode, *args), timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    def spawn_client(self, mode, *args):
        p = subprocess.Popen(self._client_argv(mode, *args), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        self._spawned.append(p)
        return p

    @staticmethod
    def result(p, timeout=120):
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, "client exited %d: %s" % (p.returncode, err.decode(errors="replace"))
        return json.loads(out.decode().strip().splitlines()[-1])

    # ---- journals ------------------------------------------------------------

    @staticmethod
    def journal(box, *args):
        return box.journal(*args)

    def remote_journal(self, *args):
        """journalctl -D /var/log/journal/remote on the log host."""
        return self.log.journal("-D", "/var/log/journal/remote", *args)
