"""Lingering close: a client that speaks first, or sends more than poold reads,
still gets the whole payload and a clean EOF (poold shuts its side down and
drains the client before it closes, as nginx's lingering_close does), and a
client that keeps sending is closed after the bounds."""
import os
import re
import socket
import time

from harness import TUTORIAL_PAYLOAD, send_until_closed, slow_factor

PAYLOAD_LEN = 4 << 20


def big_payload(tmp_path):
    path = tmp_path / "payload.bin"
    data = os.urandom(PAYLOAD_LEN)
    path.write_bytes(data)
    return str(path), data


def slow_client(p, first):
    """Small receive buffer, speaks first, reads only later: the case that
    used to end in a reset after 1.4-2.4 MiB."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    s.settimeout(10 * slow_factor())
    s.connect((p.host, p.port))
    s.sendall(first)
    time.sleep(0.5)
    return s


def read_to_eof(s):
    got = bytearray()
    while True:
        chunk = s.recv(1 << 20)  # raises ConnectionResetError on a reset
        if not chunk:
            return bytes(got)
        got += chunk


def test_client_that_speaks_first_gets_the_whole_payload(poold, tmp_path):
    path, data = big_payload(tmp_path)
    p = poold(f"[payload]\nfile = {path}\n[session]\nmax_messages = 0\n")
    s = slow_client(p, b"hello")
    assert read_to_eof(s) == data
    s.close()
    rec = p.wait_log(r"Closed connection 1 ")[0]
    assert "sent 4194304 of 4194304 bytes" in rec, rec
    assert "lingered" in rec and "client closed" in rec, rec


def test_client_sending_more_than_max_messages_gets_the_whole_payload(poold, tmp_path):
    path, data = big_payload(tmp_path)
    p = poold(f"[payload]\nfile = {path}\n[session]\nmax_messages = 1\n")
    s = slow_client(p, b"x" * 3000)
    assert read_to_eof(s) == data
    s.close()
    rec = p.wait_log(r"Closed connection 1 ")[0]
    assert "1 message (1024 bytes) received" in rec, rec


def lingering_client(p, data):
    """Speaks first, then reads the whole payload and poold's EOF: with 4 MiB
    to send to a 64 KiB window, the early bytes are there before poold is
    done, so it must linger."""
    s = slow_client(p, b"early")
    assert read_to_eof(s) == data
    return s


def test_client_that_keeps_sending_is_closed_after_the_byte_bound(poold, tmp_path):
    path, data = big_payload(tmp_path)
    p = poold(f"[payload]\nfile = {path}\n[session]\nmax_messages = 0\n"
              "lingering_bytes = 100000\nlingering_time = 30s\n")
    s = lingering_client(p, data)
    reset = False
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 10 * slow_factor():
            s.sendall(b"y" * 4096)
    except (BrokenPipeError, ConnectionResetError):
        reset = True
    assert reset, "poold kept draining past lingering_bytes"
    rec = p.wait_log(r"Closed connection 1 ")[0]
    assert "closed at lingering_bytes" in rec, rec


def test_client_that_keeps_sending_is_closed_after_lingering_time(poold, tmp_path):
    path, data = big_payload(tmp_path)
    p = poold(f"[payload]\nfile = {path}\n[session]\nmax_messages = 0\n"
              "lingering_time = 500ms\nlingering_timeout = 5s\n")
    s = lingering_client(p, data)
    took = send_until_closed(s, b"z", 0.02, 10)
    assert took is not None
    assert took < 5 * slow_factor()
    rec = p.wait_log(r"Closed connection 1 ")[0]
    assert "closed at lingering_time" in rec, rec


def test_silent_client_that_keeps_the_connection_is_closed_after_lingering_timeout(poold, tmp_path):
    """A client that got the payload and EOF but never closes is closed
    after lingering_timeout."""
    path, data = big_payload(tmp_path)
    p = poold(f"[payload]\nfile = {path}\n[session]\nmax_messages = 0\nlingering_timeout = 300ms\n")
    s = lingering_client(p, data)
    rec = p.wait_log(r"Closed connection 1 ")[0]
    assert "closed at lingering_timeout" in rec and "discarded 5 bytes" in rec, rec
    s.close()


def test_lingering_holds_no_worker_and_counts_against_max_connections(poold, tmp_path):
    path, data = big_payload(tmp_path)
    p = poold(f"[payload]\nfile = {path}\n[pool]\nthreads = 1\n"
              "[session]\nmax_messages = 0\nlingering_timeout = 20s\n[limits]\nmax_connections = 2\n")
    a = lingering_client(p, data)  # lingers, waiting for our close
    with p.connect() as b:  # the one worker still serves others
        assert read_to_eof(b) == data
    p.wait_log(r"Closed connection 2 ")
    c = lingering_client(p, data)
    with p.connect() as d:  # a and c hold both slots
        assert d.recv(10) == b""
    p.wait_log(r"too many connections \(max_connections\)")
    a.close()
    p.wait_log(r"Closed connection 1 .*client closed")
    c.close()


def test_early_senders_racing_the_close_all_get_payload_and_eof(poold):
    """Whether a client's bytes arrive before poold is done (it lingers) or
    just after (it closed at once, everything acknowledged), the client reads
    the whole payload and a clean EOF, never a reset."""
    p = poold("[session]\nmax_messages = 0\n[log]\nlevel = notice\n")
    for i in range(300):
        with p.connect() as s:
            s.sendall(b"hello %d\n" % i)
            assert read_to_eof(s) == TUTORIAL_PAYLOAD


def test_close_record_counts_bytes_the_client_never_got(poold, tmp_path):
    """A client that never reads is cut off by idle_timeout: the close record
    says how much of what poold sent was still in the kernel (SIOCOUTQ)."""
    path, data = big_payload(tmp_path)
    p = poold(f"[payload]\nfile = {path}\n[session]\nidle_timeout = 300ms\n")
    s = slow_client(p, b"early")  # never reads
    rec = p.wait_log(r"Closed connection 1 ")[0]
    m = re.search(r"sent (\d+) of 4194304 bytes.*idle timeout; (\d+) bytes not yet received by the client", rec)
    assert m, rec
    sent, unsent = int(m.group(1)), int(m.group(2))
    assert 0 < unsent <= sent < PAYLOAD_LEN, rec
    s.close()
