"""One event loop per thread (issue "No serial thread"): the limits stay
exact while several loops accept at once, a reload that shrinks the pool lets
the retired loops finish their clients, and a mixed load with reloads loses
no client and no byte (run under ThreadSanitizer by `make check
SANITIZE=thread`, where the poold fixture fails the test on any report)."""
import os
import random
import re
import signal
import socket
import threading
import time

from harness import TUTORIAL_PAYLOAD, recv_all, recv_exact, slow_factor


def burst_connect(p, n, source="127.0.0.1"):
    """n clients connecting at once from one address, from 4 threads, so the
    loops accept them in parallel; returns the open sockets."""
    socks, lock = [], threading.Lock()

    def connect(k):
        for _ in range(k):
            s = socket.create_connection((p.host, p.port), timeout=10, source_address=(source, 0))
            with lock:
                socks.append(s)

    threads = [threading.Thread(target=connect, args=(n // 4,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return socks


def served_and_refused(socks):
    """Each held socket either got the payload (and stays open: poold waits
    for its messages) or was closed without one."""
    served = refused = 0
    for s in socks:
        s.settimeout(5 * slow_factor())
        data = b""
        try:
            while len(data) < len(TUTORIAL_PAYLOAD):
                chunk = s.recv(64)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        if data == TUTORIAL_PAYLOAD:
            served += 1
        else:
            assert data == b"", data
            refused += 1
    return served, refused


def test_max_connections_is_exact_while_four_loops_accept(poold):
    p = poold("[pool]\nthreads = 4\n[limits]\nmax_connections = 20\n[session]\nidle_timeout = 60s\n")
    socks = burst_connect(p, 120)
    try:
        assert served_and_refused(socks) == (20, 100)
        p.wait_log(r"too many connections \(max_connections\)")
    finally:
        for s in socks:
            s.close()


def test_per_source_is_exact_while_four_loops_accept(poold):
    p = poold("[pool]\nthreads = 4\n[limits]\nper_source = 7\n[session]\nidle_timeout = 60s\n")
    socks = burst_connect(p, 60)
    other = burst_connect(p, 8, source="127.0.0.3")
    try:
        assert served_and_refused(socks) == (7, 53)
        assert served_and_refused(other) == (7, 1)
    finally:
        for s in socks + other:
            s.close()


def threads_of(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def test_reload_that_shrinks_the_pool_lets_retired_loops_finish(poold):
    """Clients held by loops that a reload retires are still served to the
    end; then those threads exit, and new clients go to the loops left."""
    p = poold("[pool]\nthreads = 4\n[session]\nidle_timeout = 60s\n[log]\nlevel = info\n")
    held = burst_connect(p, 40)
    for s in held:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    before = threads_of(p.pid)
    p.write_config("[pool]\nthreads = 1\n[session]\nidle_timeout = 60s\n[log]\nlevel = info\n"
                   f"[listen]\naddress = 127.0.0.1:{p.port}\n")
    p.signal(signal.SIGHUP)
    p.wait_log(r"Reloaded configuration: 1 threads")
    # Every held client still talks to its loop, retired or not.
    for i, s in enumerate(held):
        s.sendall(b"after reload %d" % i)
    p.wait_log(r"Received message 1 \(\d+ bytes\) from .*: \"after reload \d+\"", count=40)
    for s in held:
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
        s.close()
    p.wait_log(r"Closed connection \d+ .*closed by client", count=40)
    deadline = time.monotonic() + 10 * slow_factor()
    while threads_of(p.pid) > before - 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threads_of(p.pid) == before - 3, "the three retired loop threads did not exit"
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD


CONFIGS = [
    "[pool]\nthreads = {t}\n[payload]\ntext = {text}\n[session]\nidle_timeout = 300ms\n"
    "[limits]\nper_source = 0\n[log]\nlevel = notice\n",
    "[pool]\nthreads = {t}\n[payload]\ntext = {text}\n[session]\nidle_timeout = 300ms\n"
    "[limits]\nper_source = 1000\nper_source_rate = 100000/s\n[log]\nlevel = notice\n",
]


def test_mixed_load_with_reloads_loses_nothing(poold):
    """Four kinds of clients for a bounded count, while reloads change the
    payload, the thread count (grow and shrink) and the limits: every client
    gets one of the payloads whole, and a clean end of file."""
    payloads = [b"payload-%d-" % i + b"x" * (30 * i) for i in range(6)]
    p = poold(CONFIGS[0].format(t=2, text=payloads[0].decode()))
    errors, done = [], []
    stop_at = time.monotonic() + 60 * slow_factor()

    def client(kind, n):
        rnd = random.Random(kind)
        for i in range(n):
            if time.monotonic() > stop_at:
                errors.append(f"{kind}: out of time after {i}")
                return
            try:
                with socket.create_connection((p.host, p.port), timeout=10) as s:
                    if kind == "early":
                        s.sendall(b"hello early\n")
                        s.shutdown(socket.SHUT_WR)
                    if kind in ("idle", "early"):
                        data = recv_all(s, timeout=10)  # idle_timeout closes an idle one
                    elif kind == "close":
                        # The payload's index is in its first bytes: read
                        # exactly that payload, then close first.
                        data = recv_exact(s, 10, timeout=10)
                        want = payloads[int(data[8:9])]
                        data += recv_exact(s, len(want) - 10, timeout=10)
                    else:
                        head = s.recv(8)
                        for m in range(rnd.randint(1, 5)):
                            s.sendall(b"message %d" % m)
                        s.shutdown(socket.SHUT_WR)
                        data = head + recv_all(s, timeout=10)
                    if data not in payloads:
                        errors.append(f"{kind}: got {data[:40]!r}... ({len(data)} bytes)")
                done.append(kind)
            except OSError as e:
                errors.append(f"{kind}: {e!r}")

    counts = {"close": 150, "talk": 100, "early": 100, "idle": 8}
    threads = [threading.Thread(target=client, args=(k, n)) for k, n in counts.items()]
    for t in threads:
        t.start()
    for i in range(1, 9):
        time.sleep(0.15)
        p.write_config(CONFIGS[i % 2].format(t=1 + i % 4, text=payloads[i % 6].decode())
                       + f"[listen]\naddress = 127.0.0.1:{p.port}\n")
        p.signal(signal.SIGHUP)
        p.wait_log(r"Reloaded configuration", count=i, timeout=10)
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors[:10]
    assert len(done) == sum(counts.values())
    assert p.stop() == 0
    stopped = [l for l in p.log() if "Stopped:" in l]
    assert stopped and re.search(r"Stopped: %d served, 0 refused" % len(done), stopped[0]), stopped
