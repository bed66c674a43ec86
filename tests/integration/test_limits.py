"""Limits an operator relies on: timeouts, the overload policy, per-source and
max_connections caps, idle clients that must not starve fresh ones, and fd
exhaustion that must neither spin nor kill poold."""
import signal
import socket
import subprocess
import time

import pytest

from harness import TUTORIAL_PAYLOAD, free_port, recv_all, recv_exact, send_until_closed, slow_factor


def test_idle_timeout_closes_silent_client(poold):
    p = poold("[session]\nidle_timeout = 300ms\n")
    s = p.connect()
    assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    t0 = time.monotonic()
    assert recv_all(s, timeout=5) == b""
    elapsed = time.monotonic() - t0
    assert 0.25 < elapsed < 3 * slow_factor(), elapsed
    p.wait_log(r"idle timeout")


def test_activity_resets_idle_timeout(poold):
    p = poold("[session]\nidle_timeout = 400ms\nmax_messages = 100\n")
    s = p.connect()
    recv_exact(s, 26)
    for _ in range(6):  # 1.2 s in all, well past one idle_timeout
        time.sleep(0.2)
        s.send(b"ping")
    s.settimeout(0.1)
    with pytest.raises(socket.timeout):
        s.recv(1)  # still open
    assert not [l for l in p.log() if "idle timeout" in l]
    s.close()


def test_session_timeout_caps_a_chatty_client(poold):
    p = poold("[session]\nidle_timeout = 5s\nsession_timeout = 600ms\nmax_messages = 1000\n")
    s = p.connect()
    recv_exact(s, 26)
    assert send_until_closed(s, b"x", 0.05, 5) is not None, "poold kept a session open past session_timeout"
    p.wait_log(r"session timeout")


def test_overload_close_refuses_past_max_connections(poold):
    p = poold("[limits]\nmax_connections = 2\n")
    held = [p.connect(), p.connect()]
    for s in held:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    extra = p.connect()
    assert recv_all(extra) == b""  # closed without a payload
    p.wait_log(r"Refused connection from 127\.0\.0\.1:\d+: too many connections \(max_connections\)")
    held[0].close()
    p.wait_log(r"Closed connection \d+ ")
    with p.connect() as s:  # room again
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    held[1].close()


def test_overload_busy_sends_busy_message(poold):
    p = poold("[limits]\nmax_connections = 1\noverload = busy\nbusy_message = try later\\n\n")
    held = p.connect()
    recv_exact(held, 26)
    with p.connect() as s:
        assert recv_all(s) == b"try later\n"
    held.close()


def test_per_source_limit(poold):
    p = poold("[limits]\nper_source = 2\n")
    a, b = p.connect(), p.connect()
    recv_exact(a, 26), recv_exact(b, 26)
    with p.connect() as c:
        assert recv_all(c) == b""
    p.wait_log(r"too many connections from this source \(per_source\)")
    # Another loopback address is another source.
    with socket.create_connection((p.host, p.port), source_address=("127.0.0.2", 0), timeout=5) as d:
        assert recv_exact(d, 26) == TUTORIAL_PAYLOAD
    a.close(), b.close()


def listen_backlog(port):
    """The backlog of the listening socket on port, as the kernel holds it
    (ss shows it as a LISTEN socket's Send-Q)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[2])


def test_queue_max_is_the_listen_backlog_and_reload_changes_it(poold):
    """Clients that wait for a thread wait in the listening socket's backlog:
    queue_max sets it when poold binds its own sockets, again on reload."""
    p = poold("[pool]\nqueue_max = 7\n")
    assert listen_backlog(p.port) == 7
    p.write_config("[pool]\nqueue_max = 9\n")
    p.signal(signal.SIGHUP)
    p.wait_log(r"Reloaded configuration")
    assert listen_backlog(p.port) == 9
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD


def test_queue_max_under_systemd_is_the_socket_units_backlog(poold):
    """systemd's socket keeps its unit's Backlog=; a queue_max set anyway is
    accepted with a notice that says so."""
    p = poold("[pool]\nqueue_max = 7\n", activate=True)
    with p.connect() as s:  # starts poold
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    p.wait_log(r"queue_max = 7 does not apply to the sockets systemd passes: their backlog is the "
               r"socket unit's Backlog=, ignoring\.")
    assert listen_backlog(p.port) != 7


def test_thousand_idle_clients_do_not_starve_a_fresh_one(poold):
    p = poold("[pool]\nthreads = 2\n[session]\nidle_timeout = 60s\n")
    idle = []
    try:
        for _ in range(1000):
            s = p.connect()
            idle.append(s)
        # Each idle client got its payload and now sits parked.
        for s in idle[:: 50]:
            assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
        t0 = time.monotonic()
        with p.connect() as s:
            assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
            s.send(b"hello")
        latency = time.monotonic() - t0
        print(f"fresh client's payload after {latency * 1000:.1f} ms with 1000 idle clients")
        assert latency < 2 * slow_factor()
        p.wait_log(r"Received message 1 \(5 bytes\)")
    finally:
        for s in idle:
            s.close()


def test_reset_client_does_not_kill_a_worker(poold):
    # The tutorial lost a thread for good to each reset; poold must not.
    p = poold("[pool]\nthreads = 1\n")
    for _ in range(20):
        s = p.connect()
        recv_exact(s, 26)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD


def test_fd_exhaustion_neither_spins_nor_kills(poold):
    """Under `ulimit -n 64`, 150 clients: accept() hits EMFILE. poold sheds
    the excess, keeps serving, burns little CPU meanwhile, and its fd count
    returns to where it was."""
    p = poold("[limits]\nmax_connections = 4096\n[session]\nidle_timeout = 60s\n", prlimit_nofile=64)
    base = p.fd_count()
    held = []
    for _ in range(150):
        try:
            held.append(socket.create_connection((p.host, p.port), timeout=5))
        except OSError:
            pass
    time.sleep(0.5)
    with open(f"/proc/{p.pid}/stat") as f:
        f1 = f.read().split()
    time.sleep(1.0)
    with open(f"/proc/{p.pid}/stat") as f:
        f2 = f.read().split()
    cpu = (int(f2[13]) + int(f2[14]) - int(f1[13]) - int(f1[14])) / 100.0
    print(f"poold CPU while out of fds: {cpu:.2f} s per s")
    assert cpu < 0.5, "poold spins while out of file descriptors"
    p.wait_log(r"Failed to accept connection: Too many open files")
    for s in held:
        s.close()
    time.sleep(0.5)
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    deadline = time.monotonic() + 10 * slow_factor()
    while p.fd_count() > base and time.monotonic() < deadline:
        time.sleep(0.1)
    assert p.fd_count() == base
    assert p.proc.poll() is None


def test_per_source_counts_ipv4_on_dual_stack_by_ipv4_address(poold):
    """On a [::] socket, IPv4 clients arrive as ::ffff:a.b.c.d; they are
    limited (and logged) by their IPv4 address, apart from IPv6 ones."""
    port = free_port(socket.AF_INET6, "::")
    p = poold(f"[limits]\nper_source = 1\n[listen]\naddress = [::]:{port}\n")
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert recv_exact(first, 26) == TUTORIAL_PAYLOAD
    with socket.create_connection(("127.0.0.1", port), timeout=5) as second:
        assert recv_all(second) == b""
    line = p.wait_log(r"Refused connection from .*per_source")[0]
    assert "Refused connection from 127.0.0.1:" in line and "ffff" not in line
    with socket.create_connection(("::1", port), timeout=5) as v6:
        assert recv_exact(v6, 26) == TUTORIAL_PAYLOAD
    first.close()
