"""An event loop's error exit: every connection still open (waiting for its
client, just accepted or lingering) is closed and logged before poold exits,
none is left to the kernel (and, under ASan, none leaks)."""
import re
import socket
import time

from harness import recv_exact, slow_factor
from reliability_helpers import build_shim


def test_error_exit_closes_every_open_connection(poold, tmp_path):
    trigger = str(tmp_path / "fail-now")
    env = {"LD_PRELOAD": build_shim(tmp_path, "failepoll"), "FAILEPOLL_TRIGGER": trigger,
           "ASAN_OPTIONS": "verify_asan_link_order=0"}
    p = poold("[pool]\nthreads = 1\n[log]\nlevel = debug\nmessages = no\n", extra_env=env)
    parked = [p.connect() for _ in range(20)]
    for s in parked:
        recv_exact(s, 26)  # then parked, waiting for messages
    # The loop's last turn accepts a burst and serves it; then epoll_wait()
    # fails, with those clients and the parked ones still open.
    open(trigger, "w").close()
    time.sleep(0.06)  # the shim is asleep in epoll_wait() now
    burst = []
    for i in range(60):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((p.host, p.port))
        burst.append(s)
    assert p.proc.wait(timeout=10 * slow_factor()) == 71
    p.reader.join(timeout=5)
    log = "\n".join(p.log())
    assert "Event loop failed" in log
    accepted = set(re.findall(r"Accepted connection (\d+) ", log))
    closed = set(re.findall(r"Closed connection (\d+) ", log))
    assert len(accepted) >= 20
    assert accepted == closed, sorted(accepted - closed, key=int)[:20]
    for s in parked + burst:
        s.close()
