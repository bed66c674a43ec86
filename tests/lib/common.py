"""Small helpers every test folder shares: the tutorial payload, a free port,
and a polling wait. Standard library only (no pytest), so the host-side
scripts (tests/bench/run) can import it as well as the pytest folders.

Found as `common` with tests/lib on sys.path: tests/conftest.py puts it there
for every pytest folder (tests/system/conftest.py and tests/package/conftest.py
do too, as they do for container.py); scripts insert it themselves.

API
---
    from common import (TUTORIAL_PAYLOAD, TUTORIAL_PAYLOAD_ESCAPED, free_port,
                        slow_factor, wait_until)

TUTORIAL_PAYLOAD          the 26 bytes poold serves by default: the tutorial's
                          pickle.dumps([1, 2, 7, 9, 0], protocol=0)
TUTORIAL_PAYLOAD_ESCAPED  the same as poold.conf's `text =` writes it (C
                          escapes: \\n, ...), also what loadgen -e and nginx's
                          `return` take
slow_factor()             4.0 when SANITIZE is set (sanitizer builds run several
                          times slower), else 1.0: stretch waits, not assertions
free_port(family=AF_INET, host="127.0.0.1", below_ephemeral=False)
                          a TCP port free right now on host (bound to port 0 and
                          released). below_ephemeral=True picks a random free
                          port below the kernel's ephemeral range instead, where
                          clients' TIME_WAIT sockets cannot make a server's
                          bind() fail (the bench, under load).
wait_until(pred, timeout=10.0, step=0.05, what=None)
                          call pred() every step seconds until it returns a true
                          value or timeout * slow_factor() seconds have passed;
                          returns pred()'s last value. With what= (a description
                          of the awaited state), a timeout raises AssertionError
                          naming it and the last value instead of returning it.
"""
import os
import socket
import time

TUTORIAL_PAYLOAD = b"(lp0\nI1\naI2\naI7\naI9\naI0\na."


def _c_escape(data):
    """bytes -> the C-escaped text poold's `text =` (and loadgen -e) read back."""
    out = []
    for b in data:
        c = chr(b)
        if c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif 0x20 <= b < 0x7f:
            out.append(c)
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


TUTORIAL_PAYLOAD_ESCAPED = _c_escape(TUTORIAL_PAYLOAD)


def slow_factor():
    """Sanitizer builds run several times slower: stretch waits, not assertions."""
    return 4.0 if os.environ.get("SANITIZE") else 1.0


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(family=socket.AF_INET, host="127.0.0.1", below_ephemeral=False):
    """A TCP port that is free on host right now (see the module docstring)."""
    if not below_ephemeral:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    base = max(10000, min(_ephemeral_low(), 32768) - 12000)
    for _ in range(200):
        port = base + int.from_bytes(os.urandom(2), "little") % 10000
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range on %s" % host)


def wait_until(pred, timeout=10.0, step=0.05, what=None):
    """Polls pred() until it is true or timeout * slow_factor() seconds pass;
    returns its last value, or raises AssertionError if what= is given."""
    limit = timeout * slow_factor()
    deadline = time.monotonic() + limit
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            break
        time.sleep(step)
    if not v and what is not None:
        raise AssertionError("timed out after %gs waiting for %s (last %r)" % (limit, what, v))
    return v
