"""Shared test harness: start the real poold with a temporary config, the way
PgBouncer's conftest.py does, and talk to it over loopback.

`poold` (fixture, in conftest.py) is a factory: poold(config_text, activate=False, ...) returns
a running Poold; every instance is stopped (by PID) at teardown and its exit
status and stderr are checked for sanitizer reports.
"""
import os
import re
import signal
import socket
import subprocess
import threading
import time

# Defined once in tests/lib/common.py (tests/conftest.py puts tests/lib on
# sys.path); the test files import them from here too, as they always have.
from common import TUTORIAL_PAYLOAD, free_port, slow_factor

__all__ = ["ROOT", "TUTORIAL_PAYLOAD", "SANITIZER_MARKS", "NotifySocket", "Poold", "free_port",
           "poold_bin", "recv_all", "recv_exact", "slow_factor"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Measured numbers from the `figures` fixture (tests/conftest.py), printed at
# the end of the run whatever pytest's capture settings.
FIGURES = []
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


def poold_bin():
    return os.environ.get("POOLD_BIN") or os.path.join(ROOT, "poold")


def recv_exact(sock, n, timeout=5.0):
    sock.settimeout(timeout * slow_factor())
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 20))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def send_until_closed(sock, data, interval, timeout):
    """Sends data every interval seconds until poold closes the connection
    (EPIPE or a reset); returns the seconds that took, or None if it was
    still open after timeout (stretched on sanitizer builds)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout * slow_factor():
        try:
            sock.send(data)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0
        time.sleep(interval)
    return None


def recv_all(sock, timeout=5.0):
    """Reads until the server closes the connection."""
    sock.settimeout(timeout * slow_factor())
    data = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return bytes(data)
        data += chunk


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def wait_for(self, pattern, timeout=5.0, since=0):
        deadline = time.monotonic() + timeout * slow_factor()
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            with self.lock:
                for i, (_, m) in enumerate(self.messages[since:], since):
                    if rx.search(m):
                        return i, m
            time.sleep(0.01)
        with self.lock:
            raise AssertionError(f"no notify message matching {pattern!r}: {self.messages}")

    def all(self):
        with self.lock:
            return [m for _, m in self.messages]

    def close(self):
        self.sock.close()


class Poold:
    def __init__(self, tmpdir, config, activate=False, listen=None, extra_env=None, notify=False,
                 prlimit_nofile=None, args=(), wait_ready=True, wrap=(), fdnames=None):
        self.tmpdir = tmpdir
        self.config_path = os.path.join(tmpdir, "poold.conf")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.unix_path = None
        self.lines = []
        self.lock = threading.Lock()
        if "[listen]" not in config and not activate:
            config += f"\n[listen]\naddress = 127.0.0.1:{self.port}\n"
        self.write_config(config)
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("LISTEN_FDS", None)
        env["POOLD_LOG_TARGET"] = "stderr"
        self.notify = None
        if notify:
            self.notify = NotifySocket(tmpdir)
            env["NOTIFY_SOCKET"] = self.notify.path
        if extra_env:
            env.update(extra_env)
        cmd = [poold_bin(), "--config", self.config_path, *args]
        if activate:
            sa = ["systemd-socket-activate"]
            for addr in (listen or [f"127.0.0.1:{self.port}"]):
                sa += ["-l", addr]
            if fdnames:  # LISTEN_FDNAMES, one name per -l address
                sa += ["--fdname=" + ":".join(fdnames)]
            if self.notify:
                sa += ["-E", f"NOTIFY_SOCKET={self.notify.path}"]
            cmd = sa + ["-E", "POOLD_LOG_TARGET=stderr"] + cmd
        if prlimit_nofile:
            cmd = ["prlimit", f"--nofile={prlimit_nofile}:{prlimit_nofile}", "--"] + cmd
        cmd = list(wrap) + cmd  # e.g. setpriv to run poold as another user
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.returncode = None
        if wait_ready:
            # systemd-socket-activate listens first and starts poold on the
            # first connection, as systemd does.
            self.wait_log(r"Listening on" if activate else r"Started:", timeout=10,
                          count=len(listen) if activate and listen else 1)

    def _read(self):
        for raw in self.proc.stderr:
            with self.lock:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def write_config(self, text):
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.config_path)

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        with self.lock:
            return list(self.lines)

    def wait_log(self, pattern, timeout=5.0, count=1):
        deadline = time.monotonic() + timeout * slow_factor()
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            hits = [l for l in self.log() if rx.search(l)]
            if len(hits) >= count:
                return hits
            if self.proc.poll() is not None:
                time.sleep(0.1)
                hits = [l for l in self.log() if rx.search(l)]
                if len(hits) >= count:
                    return hits
                raise AssertionError(f"poold exited ({self.proc.returncode}) before logging "
                                     f"{pattern!r}:\n" + "\n".join(self.log()))
            time.sleep(0.01)
        raise AssertionError(f"poold did not log {pattern!r} {count} times within {timeout}s:\n"
                             + "\n".join(self.log()[-50:]))

    def connect(self, family=None, timeout=5.0):
        if self.unix_path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout * slow_factor())
            s.connect(self.unix_path)
            return s
        s = socket.create_connection((self.host, self.port), timeout=timeout * slow_factor())
        return s

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=20.0):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout * slow_factor())
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
            raise AssertionError("poold did not exit within %ss of SIGTERM" % timeout)
        self.reader.join(timeout=5)
        if self.notify:
            self.notify.close()
        return self.returncode

    def sanitizer_reports(self):
        return [l for l in self.log() if any(m in l for m in SANITIZER_MARKS)]

    def status_kib(self, key):
        """A /proc/PID/status figure in KiB (VmRSS, VmHWM, ...), 0 if absent."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return 0

    def rss_kib(self):
        return self.status_kib("VmRSS")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
