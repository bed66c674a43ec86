"""journald gone, blocked, or back (issue 6), and the journal fields a
client's bytes end up in. poold runs with POOLD_LOG_TARGET=journal in a
private mount namespace whose /run/systemd/journal is a directory of ours:
empty (journald gone), or holding a datagram socket named `socket` that we
never read (journald blocked: after net.unix.max_dgram_qlen datagrams a
blocking sender waits forever), or one we read (a working journald, to check
POOLD_MESSAGE is binary-safe). Needs root (mount namespaces)."""
import os
import signal
import socket
import struct
import threading
import time

import pytest

from harness import TUTORIAL_PAYLOAD, free_port, recv_all, recv_exact, slow_factor
from reliability_helpers import (can_unshare_mounts, ci, fetch_payload, figure, journal_wrapper, status_value,
                                 wait_until)


@pytest.fixture
def fake_journal(tmp_path, monkeypatch):
    if not can_unshare_mounts():
        if ci():
            pytest.fail("needs root for a private mount namespace (unshare -m)")
        pytest.skip("needs root for a private mount namespace (unshare -m)")
    jdir = tmp_path / "journal"
    jdir.mkdir()
    monkeypatch.setenv("POOLD_BIN", journal_wrapper(tmp_path, str(jdir)))
    return jdir


def start(poold, config=""):
    p = poold(config, extra_env={"POOLD_LOG_TARGET": "journal"}, notify=True, wait_ready=False)
    p.notify.wait_for(r"READY=1", timeout=10)
    return p


def serve_clients(p, n, message=b"hello journal"):
    """n clients: payload, one message, close. Returns latencies; stops at
    the first client not served within 5 s (poold blocked)."""
    lat = []
    for _ in range(n):
        t0 = time.monotonic()
        try:
            with socket.create_connection((p.host, p.port), timeout=5 * slow_factor()) as s:
                if recv_exact(s, 26, timeout=5) != TUTORIAL_PAYLOAD:
                    break
                s.sendall(message)
        except OSError:
            break
        lat.append(time.monotonic() - t0)
    return lat


def parse_native(dgram):
    """journald's native protocol: KEY=value\\n, or KEY\\n<le64 size><data>\\n."""
    fields, i = {}, 0
    while i < len(dgram):
        nl = dgram.index(b"\n", i)
        line = dgram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            (size,) = struct.unpack("<Q", dgram[nl + 1:nl + 9])
            v = dgram[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields.setdefault(k.decode(), []).append(v)
    return fields


def test_journald_gone(poold, fake_journal):
    """No journal socket at all: every client is still served promptly; what
    could not be logged is counted in STATUS= (or falls back to stderr);
    when journald comes back, entries reach it again."""
    p = start(poold, "[pool]\nthreads = 2\n")
    lat = serve_clients(p, 200)
    figure("clients served with journald gone", f"{len(lat)} of 200")
    figure("payload latency max (ms)", f"{max(lat) * 1000:.1f}" if lat else "-")
    assert len(lat) == 200
    assert max(lat) < 1.0
    dropped = wait_until(lambda: status_value(p, r"\d+ log entries dropped"), 5)
    fallback = [l for l in p.log() if "Received message" in l]
    figure("STATUS", dropped)
    figure("events that fell back to stderr", len(fallback))
    assert dropped or len(fallback) >= 200, "poold neither counted nor kept the log entries it could not send"

    # journald is back.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(fake_journal / "socket"))
    sock.settimeout(5 * slow_factor())
    serve_clients(p, 1, b"after the restart")
    got = []
    try:
        for _ in range(50):
            got.append(parse_native(sock.recv(1 << 20)))
            if any(b"after the restart" in v for f in got for v in f.get("POOLD_MESSAGE", [])):
                break
    except socket.timeout:
        pass
    sock.close()
    figure("entries received once journald was back", len(got))
    assert any(b"after the restart" in v for f in got for v in f.get("POOLD_MESSAGE", []))
    t0 = time.monotonic()
    assert p.stop() == 0
    figure("exit after SIGTERM (s)", f"{time.monotonic() - t0:.2f}")


def test_journald_blocking(poold, fake_journal):
    """A journal socket nobody reads (its queue fills after
    net.unix.max_dgram_qlen = 10 datagrams) and a client whose 20,000
    one-byte messages make 20,000 log events: clients keep being served
    promptly by the one worker, poold counts the entries it drops (STATUS=
    '... N log entries dropped'), once journald reads again new entries get
    through, and SIGTERM still stops poold at once while the journal is
    blocked again."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(fake_journal / "socket"))
    p = start(poold, "[pool]\nthreads = 1\n[session]\nmessage_size = 1\nmax_messages = 1000000\n"
                     "shutdown_timeout = 2s\n")
    with p.connect() as s:
        recv_exact(s, 26)
        s.sendall(b"m" * 20000)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(20 * slow_factor())
        assert s.recv(1) == b""  # poold read all 20,000 messages and closed
    lat = serve_clients(p, 200)
    figure("clients served with journald blocked", f"{len(lat)} of 200")
    if lat:
        figure("payload latency max (ms)", f"{max(lat) * 1000:.1f}")
    assert len(lat) == 200, f"poold stopped serving after {len(lat)} clients: a worker blocks on the journal"
    assert max(lat) < 1.0
    status = wait_until(lambda: status_value(p, r"\d+ log entries dropped"), 5)
    figure("STATUS", status)
    assert status, "STATUS= does not say that log entries were dropped: " + repr(p.notify.all()[-2:])

    # journald catches up: read what is queued, then new entries arrive.
    sock.settimeout(0.3)
    drained = 0
    try:
        for _ in range(30000):
            sock.recv(1 << 20)
            drained += 1
    except socket.timeout:
        pass
    sock.settimeout(5 * slow_factor())
    serve_clients(p, 1, b"journald is back")
    seen, stream = False, b""  # message_size = 1: one entry per byte
    try:
        for _ in range(1000):
            stream += b"".join(parse_native(sock.recv(1 << 20)).get("POOLD_MESSAGE", []))
            if b"journald is back" in stream:
                seen = True
                break
    except socket.timeout:
        pass
    figure("queued entries drained from the fake journal", drained)
    figure("new entries delivered after the drain", seen)
    assert seen

    # Block it again, then stop: SIGTERM must not wait on the journal.
    serve_clients(p, 50)
    time.sleep(0.2)
    t0 = time.monotonic()
    p.signal(signal.SIGTERM)
    try:
        rc = p.proc.wait(timeout=10 * slow_factor())
    except Exception:
        rc = None
    secs = time.monotonic() - t0
    figure("exit after SIGTERM with the journal blocked (s)", f"{secs:.2f}" if rc is not None else "hung (> 10 s)")
    sock.close()  # unblocks a sender stuck on the socket, so teardown can stop poold
    assert rc == 0, "poold did not exit within 10 s of SIGTERM while the journal was blocked"
    assert secs < 5 * slow_factor()


def test_client_bytes_reach_the_journal_binary_safe(poold, fake_journal):
    """A working journal: a client's bytes (NUL, newlines, invalid UTF-8,
    escape sequences) arrive in POOLD_MESSAGE exactly, MESSAGE is printable,
    the session fields are there, and each entry names the code that logged
    it (CODE_FILE/CODE_LINE/CODE_FUNC once, never log.c's own send call)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(fake_journal / "socket"))
    entries, stop = [], threading.Event()

    def reader():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                entries.append(parse_native(sock.recv(1 << 20)))
            except socket.timeout:
                continue
            except OSError:
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    p = start(poold, "[session]\nmessage_size = 4096\n")
    evil = b"\x00line1\nPRIORITY=0\nMESSAGE=forged\n\xff\xfe\x1b[2J" + bytes(range(256))
    with p.connect() as s:
        recv_exact(s, 26)
        s.sendall(evil)
        time.sleep(0.2 * slow_factor())
    wait_until(lambda: any(b"Closed connection" in b"".join(e.get("MESSAGE", [])) for e in entries), 5)
    stop.set()
    t.join(timeout=5)
    sock.close()
    msgs = [e for e in entries if "POOLD_MESSAGE" in e]
    figure("journal entries received", len(entries))
    assert len(msgs) == 1
    e = msgs[0]
    assert e["POOLD_MESSAGE"] == [evil]
    assert e["PRIORITY"] == [b"6"]
    assert len(e["MESSAGE"]) == 1 and all(0x20 <= c < 0x7f for c in e["MESSAGE"][0])
    assert e["POOLD_REMOTE"][0].startswith(b"127.0.0.1:")
    # The address alone, so `journalctl POOLD_REMOTE_ADDR=127.0.0.1` matches.
    assert e["POOLD_REMOTE_ADDR"] == [b"127.0.0.1"]
    assert e["POOLD_REMOTE"][0] == b"127.0.0.1:" + e["POOLD_REMOTE_PORT"][0]
    assert e["POOLD_BYTES"] == [str(len(evil)).encode()]
    started = [x for x in entries if x.get("MESSAGE_ID") == [b"28318b7268fe4acc854681b0705cbd8f"]]
    assert started, "no 'started' entry with its MESSAGE_ID"
    assert e["CODE_FILE"] == [b"src/session.c"]
    for x in entries:
        assert len(x.get("CODE_FILE", [])) == 1 and len(x.get("CODE_LINE", [])) == 1, x.get("CODE_FILE")
        assert x["CODE_FILE"] != [b"src/log.c"] and x["CODE_LINE"][0].isdigit(), (x["CODE_FILE"], x["MESSAGE"])
        assert x.get("CODE_FUNC") and x["CODE_FUNC"] != [b"emit"]


def test_listener_refusal_reaches_the_journal_with_its_fields(poold, fake_journal):
    """A refusal on a named listener: the refused MESSAGE_ID, the listener in
    POOLD_LISTENER, the client's address alone, and the reason in MESSAGE."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(fake_journal / "socket"))
    sock.settimeout(0.2)
    port = free_port()
    start(poold, f"[listener guarded]\nallow = 127.0.0.2\naddress = 127.0.0.1:{port}\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert recv_all(s) == b""
    entries = []
    deadline = time.monotonic() + 5 * slow_factor()
    while time.monotonic() < deadline and not any(e.get("POOLD_LISTENER") for e in entries):
        try:
            entries.append(parse_native(sock.recv(1 << 20)))
        except socket.timeout:
            pass
    sock.close()
    refused = [e for e in entries if e.get("MESSAGE_ID") == [b"62c96129d90242a683d946c8f0a13378"]]
    assert refused, entries
    e = refused[0]
    assert e["POOLD_LISTENER"] == [b"guarded"]
    assert e["POOLD_REMOTE_ADDR"] == [b"127.0.0.1"]
    assert b"on listener guarded: address not in the allow list (not allowed)" in e["MESSAGE"][0]


def test_proxied_session_carries_the_balancer_and_tls_fields(poold, fake_journal):
    """Behind a balancer: POOLD_REMOTE_ADDR is the real client from the PROXY
    header, POOLD_PROXY the balancer, and the v2 TLVs give
    POOLD_PROXY_AUTHORITY and POOLD_TLS_VERSION."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(fake_journal / "socket"))
    sock.settimeout(0.2)
    port = free_port()
    start(poold, f"[session]\nmax_messages = 0\n[listener lb]\nproxy_protocol = v2\nproxy_from = 127.0.0.1\n"
                 f"address = 127.0.0.1:{port}\n")

    def tlv(t, v):
        return bytes([t]) + struct.pack("!H", len(v)) + v
    body = (socket.inet_aton("203.0.113.7") + socket.inet_aton("192.0.2.1") + struct.pack("!HH", 4242, 2727)
            + tlv(0x02, b"example.com") + tlv(0x20, b"\x01" + b"\x00" * 4 + tlv(0x21, b"TLSv1.3")))
    hdr = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(hdr)
        assert recv_all(s) == TUTORIAL_PAYLOAD
    entries = []
    deadline = time.monotonic() + 5 * slow_factor()
    while time.monotonic() < deadline and not any(e.get("POOLD_TLS_VERSION") for e in entries):
        try:
            entries.append(parse_native(sock.recv(1 << 20)))
        except socket.timeout:
            pass
    sock.close()
    closed = [e for e in entries if e.get("POOLD_TLS_VERSION")]
    assert closed, entries
    e = closed[0]
    assert e["POOLD_REMOTE_ADDR"] == [b"203.0.113.7"] and e["POOLD_REMOTE_PORT"] == [b"4242"]
    assert e["POOLD_PROXY"][0].startswith(b"127.0.0.1:")
    assert e["POOLD_PROXY_AUTHORITY"] == [b"example.com"]
    assert e["POOLD_TLS_VERSION"] == [b"TLSv1.3"]
    assert e["POOLD_LISTENER"] == [b"lb"]
