"""How poold talks to its supervisor: sd_notify (READY, STATUS, RELOADING,
STOPPING, WATCHDOG) through a stand-in NOTIFY_SOCKET, SIGHUP reloads, and
SIGTERM drains."""
import os
import re
import signal
import socket
import threading
import time

import pytest

from harness import TUTORIAL_PAYLOAD, recv_all, recv_exact, slow_factor


def test_ready_and_live_status(poold):
    p = poold("[pool]\nthreads = 3\n", notify=True)
    p.notify.wait_for(r"READY=1")
    s = p.connect()
    recv_exact(s, 26)
    _, status = p.notify.wait_for(r"STATUS=3 workers \(\d+ busy\), 0 waiting, 1 parked; 0 served, 0 refused",
                                  timeout=5)
    s.close()
    p.notify.wait_for(r"STATUS=3 workers \(0 busy\), 0 waiting, 0 parked; 1 served, 0 refused", timeout=5)


def test_sighup_reloads_payload_and_threads_without_dropping_clients(poold):
    p = poold("[pool]\nthreads = 2\n[payload]\ntext = old\n[session]\nmax_messages = 5\n", notify=True)
    p.notify.wait_for(r"READY=1")
    inflight = p.connect()
    assert recv_exact(inflight, 3) == b"old"
    inflight.send(b"before")
    p.wait_log(r"Received message 1 \(6 bytes\)")

    text = open(p.config_path).read().replace("text = old", "text = new").replace("threads = 2", "threads = 7")
    p.write_config(text + f"\n[listen]\naddress = 127.0.0.1:{p.port}\n" if "[listen]" not in text else text)
    since = len(p.notify.all())
    p.signal(signal.SIGHUP)
    i, msg = p.notify.wait_for(r"RELOADING=1", since=since)
    assert re.search(r"MONOTONIC_USEC=\d+", msg)
    p.notify.wait_for(r"READY=1", since=i + 1)
    p.wait_log(r"Reloaded configuration: 7 threads, payload of 3 bytes")
    p.notify.wait_for(r"STATUS=7 workers")

    with p.connect() as s:
        assert recv_exact(s, 3) == b"new"
    # The client from before the reload keeps its session on the old config.
    for m in (b"after1", b"after2"):
        time.sleep(0.05)
        inflight.send(m)
    p.wait_log(r"Received message 3 \(6 bytes\) from .*\"after2\"")
    inflight.close()
    p.wait_log(r"Closed connection 1 .*sent 3 of 3 bytes, 3 messages")


def test_bad_config_on_sighup_keeps_serving_old_payload(poold):
    p = poold("[payload]\ntext = good\n", notify=True)
    p.notify.wait_for(r"READY=1")
    good = open(p.config_path).read()
    p.write_config(good + "\n[pool]\nthreads = lots\n")
    since = len(p.notify.all())
    p.signal(signal.SIGHUP)
    line = p.wait_log(r"Failed to reload configuration: .*poold\.conf:\d+: threads: \"lots\" is not a whole "
                      r"number, keeping the previous one\.")[0]
    assert line.startswith("err: ")
    i, _ = p.notify.wait_for(r"STATUS=Reload failed: .*poold\.conf:\d+: threads", since=since)
    p.notify.wait_for(r"READY=1", since=since)
    with p.connect() as s:
        assert recv_exact(s, 4) == b"good"
    # Fixing the file and reloading clears the failure from STATUS=.
    p.write_config(good.replace("text = good", "text = fixed"))
    p.signal(signal.SIGHUP)
    p.wait_log(r"Reloaded configuration")
    p.notify.wait_for(r"STATUS=4 workers", since=i + 1)
    with p.connect() as s:
        assert recv_exact(s, 5) == b"fixed"


def test_missing_payload_file_on_reload_keeps_old_payload(poold, tmp_path):
    (tmp_path / "p.bin").write_bytes(b"from-file")
    p = poold("[payload]\nfile = p.bin\n")
    os.unlink(tmp_path / "p.bin")
    with p.connect() as s:  # the loaded payload stays in memory
        assert recv_exact(s, 9) == b"from-file"
    p.signal(signal.SIGHUP)
    p.wait_log(r"Failed to reload configuration: .*poold\.conf:2: file: cannot read .*p\.bin: No such file")
    with p.connect() as s:
        assert recv_exact(s, 9) == b"from-file"


def test_sigterm_drains_inflight_sessions_and_exits_zero(poold):
    p = poold("[session]\nmax_messages = 3\n", notify=True)
    s = p.connect()
    recv_exact(s, 26)
    s.send(b"one")
    p.wait_log(r"Received message 1")
    p.signal(signal.SIGTERM)
    p.notify.wait_for(r"STOPPING=1")
    p.wait_log(r"Stopping: no new connections, 1 in progress")
    # No new clients once stopping (standalone: the listener is closed).
    with pytest.raises(OSError):
        socket.create_connection((p.host, p.port), timeout=2).recv(1)
    time.sleep(0.1)
    s.send(b"two")
    time.sleep(0.1)
    s.send(b"three")
    assert recv_all(s) == b""
    assert p.stop() == 0
    assert any("3 messages (11 bytes) received, all messages read" in l for l in p.log())
    assert any("Stopped: 1 served, 0 refused." in l for l in p.log())


def test_sigterm_deadline_closes_stragglers(poold):
    p = poold("[session]\nshutdown_timeout = 300ms\n")
    s = p.connect()
    recv_exact(s, 26)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.stop() == 0
    assert time.monotonic() - t0 < 5 * slow_factor()
    assert recv_all(s) == b""
    assert any("poold is stopping" in l for l in p.log())


def test_sigterm_deadline_while_clients_keep_sending(poold):
    """The deadline closes sessions whose clients are sending at that very
    moment: their events may sit in the same epoll batch as the wake-up that
    tells the loop to abort. poold must close them all and exit 0 (under
    ASan: touch no freed session)."""
    p = poold("[pool]\nthreads = 2\n[session]\nshutdown_timeout = 300ms\nmax_messages = 1000000\n"
              "message_size = 16\nidle_timeout = 60s\n[log]\nlevel = notice\n")
    socks = []
    for _ in range(40):
        s = p.connect()
        recv_exact(s, 26)
        s.setblocking(False)
        socks.append(s)
    stop = threading.Event()
    sent = [0]

    def send_until_closed():
        deadline = time.monotonic() + 20 * slow_factor()
        while not stop.is_set() and time.monotonic() < deadline and sent[0] < 5_000_000:
            for s in socks:
                try:
                    s.send(b"x" * 16)
                    sent[0] += 1
                except (BlockingIOError, OSError):
                    pass

    t = threading.Thread(target=send_until_closed)
    t.start()
    try:
        time.sleep(0.3)
        p.signal(signal.SIGTERM)
        assert p.stop() == 0
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()
    assert any("Shutdown deadline reached, closing 40 connections." in l for l in p.log()), p.log()[-20:]
    assert sent[0] > 0


def test_watchdog_pings_while_pool_makes_progress(poold):
    p = poold("", notify=True, extra_env={"WATCHDOG_USEC": "200000"})
    p.notify.wait_for(r"READY=1")
    first, _ = p.notify.wait_for(r"WATCHDOG=1")
    with p.connect() as s:
        recv_exact(s, 26)
    p.notify.wait_for(r"WATCHDOG=1", since=first + 1, timeout=2)


def test_no_watchdog_pings_without_watchdog_usec(poold):
    p = poold("", notify=True)
    p.notify.wait_for(r"READY=1")
    time.sleep(0.5)
    assert not [m for m in p.notify.all() if "WATCHDOG=1" in m]


def test_sigint_also_stops_cleanly(poold):
    p = poold()
    p.signal(signal.SIGINT)
    assert p.proc.wait(timeout=10 * slow_factor()) == 0
