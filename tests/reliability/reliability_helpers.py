"""Helpers for the reliability tests: fd limits, sanitizer detection, timed
clients, a fake journald in a private mount namespace, and figures printed
in one format ("figure: name = value") so RELIABILITY.md can quote them."""
import os
import re
import resource
import socket
import subprocess
import time

from common import wait_until  # tests/lib/common.py; the test files import it from here
from harness import ROOT, TUTORIAL_PAYLOAD, poold_bin, recv_all, recv_exact, slow_factor

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_nofile(want):
    """Raises this process's soft fd limit (to the hard one at most)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(want, soft)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def sanitizer_of(path=None):
    """'address', 'thread' or '' for the binary under test (by its symbols;
    POOLD_BIN may be a wrapper script, which counts as '')."""
    path = path or poold_bin()
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return ""
    if not blob.startswith(b"\x7fELF"):
        return ""
    if b"__tsan_init" in blob:
        return "thread"
    if b"__asan_init" in blob:
        return "address"
    return ""


def scale():
    """How much to stretch configured timeouts: sanitizer builds are slower,
    and a test that is about bounds must not fail on a slow build."""
    return min(slow_factor(), 2.0)


def figure(name, value):
    print(f"figure: {name} = {value}")


def fetch_payload(host, port, n=len(TUTORIAL_PAYLOAD), timeout=10.0, family=socket.AF_INET, source=None):
    """Connects, reads n bytes, closes; returns (bytes, seconds)."""
    t0 = time.monotonic()
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout * slow_factor())
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                break
            data += chunk
    return data, time.monotonic() - t0


def wait_fd_baseline(p, base, timeout=10.0):
    wait_until(lambda: p.fd_count() <= base, timeout)
    return p.fd_count()


def count_log(p, pattern):
    rx = re.compile(pattern)
    return sum(1 for l in p.log() if rx.search(l))


def status_value(p, pattern):
    """The last STATUS= line matching pattern (needs notify=True)."""
    for m in reversed(p.notify.all()):
        if m.startswith("STATUS=") and re.search(pattern, m):
            return m
    return None


def build_shim(tmpdir, name):
    """Builds the LD_PRELOAD shim NAME.c of this folder (failmalloc: malloc
    fails on demand; failepoll: epoll_wait fails on demand) into tmpdir."""
    so = os.path.join(str(tmpdir), name + ".so")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-o", so,
                    os.path.join(HERE, name + ".c"), "-ldl"], check=True, timeout=120)
    return so


def journal_wrapper(tmpdir, journal_dir):
    """A POOLD_BIN wrapper that runs poold in a private mount namespace where
    /run is a fresh tmpfs and /run/systemd/journal is journal_dir (an empty
    directory: journald is gone; a directory holding a bound, unread
    datagram socket named `socket`: journald is blocked)."""
    path = os.path.join(str(tmpdir), "poold-fake-journal")
    real = poold_bin()
    with open(path, "w") as f:
        f.write(f"""#!/bin/sh
# Runs poold against a fake journald (see reliability_helpers.journal_wrapper).
exec unshare --mount --propagation private sh -ec '
mount -t tmpfs -o size=1m,mode=755 poold-run /run
mkdir -p /run/systemd/journal
mount --bind "$1" /run/systemd/journal
shift
exec "$@"' sh '{journal_dir}' '{real}' "$@"
""")
    os.chmod(path, 0o755)
    return path


def can_unshare_mounts():
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs t /run && true"], capture_output=True, timeout=30)
    return r.returncode == 0


def ci():
    return os.environ.get("CI") == "true"


def read_all(sock, timeout=10.0):
    """Reads until the server closes (harness.recv_all, a longer default)."""
    return recv_all(sock, timeout)


def read_exact(sock, n, timeout=10.0):
    return recv_exact(sock, n, timeout)
