"""The tutorial's protocol, served by the real binary over loopback:
standalone and under systemd-socket-activate, TCP v4/v6 and unix sockets."""
import os
import pickle
import re
import socket
import time

import pytest

from harness import TUTORIAL_PAYLOAD, free_port, recv_all, recv_exact


def tutorial_client(sock, messages=10, delay=0.02):
    """The seed tutorial's client, in Python 3: unpickle the payload, send
    ten messages, close."""
    data = recv_exact(sock, len(TUTORIAL_PAYLOAD))
    value = pickle.loads(data)
    for i in range(messages):
        sock.send(f"message {i}".encode())
        time.sleep(delay)
    sock.close()
    return value


def test_default_payload_is_the_tutorials_pickled_list(poold):
    p = poold()
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
        assert TUTORIAL_PAYLOAD == pickle.dumps([1, 2, 7, 9, 0], protocol=0)
        # Nothing follows the payload: poold now waits for messages.
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(1)


def test_tutorial_client_unpickles_list_and_messages_are_logged(poold):
    p = poold()
    s = p.connect()
    assert tutorial_client(s) == [1, 2, 7, 9, 0]
    lines = p.wait_log(r"Received message \d+ \(9 bytes\) from 127\.0\.0\.1:\d+: \"message \d\"", count=10)
    assert [l.split('"')[1] for l in lines] == [f"message {i}" for i in range(10)]
    p.wait_log(r"Closed connection 1 from 127\.0\.0\.1:\d+ .*sent 26 of 26 bytes, 10 messages \(90 bytes\)")


def test_session_ends_after_max_messages(poold):
    p = poold("[session]\nmax_messages = 3\n")
    s = p.connect()
    recv_exact(s, 26)
    for i in range(3):
        s.send(b"x%d" % i)
        time.sleep(0.05)
    # poold closes after the third message: we see EOF, not more waiting.
    assert recv_all(s, timeout=5) == b""
    p.wait_log(r"3 messages \(6 bytes\) received, all messages read")
    assert not [l for l in p.log() if "Received message 4" in l]


def test_max_messages_zero_sends_payload_and_closes(poold):
    p = poold("[session]\nmax_messages = 0\n")
    with p.connect() as s:
        assert recv_all(s) == TUTORIAL_PAYLOAD
    p.wait_log(r"payload sent")


def test_message_size_splits_reads(poold):
    p = poold("[session]\nmessage_size = 4\nmax_messages = 3\n")
    s = p.connect()
    recv_exact(s, 26)
    s.send(b"abcdefghij")
    assert recv_all(s) == b""
    lines = p.wait_log(r"Received message", count=3)
    assert [l.split('"')[1] for l in lines] == ["abcd", "efgh", "ij"]


def test_inline_text_payload_with_escapes(poold):
    p = poold("[payload]\ntext = \\x20hello\\tworld\\x3b\\0\\n\n[session]\nmax_messages = 0\n")
    with p.connect() as s:
        assert recv_all(s) == b" hello\tworld;\0\n"


def test_binary_payload_file(poold, tmp_path):
    blob = bytes(range(256)) * 1024 + b"\0end"
    (tmp_path / "blob.bin").write_bytes(blob)
    p = poold("[payload]\nfile = blob.bin\n[session]\nmax_messages = 0\n")
    with p.connect() as s:
        assert recv_all(s) == blob


def test_large_payload_to_slow_reader_does_not_block_workers(poold, tmp_path):
    """An 8 MiB payload to a client that reads slowly parks on EPOLLOUT; with
    one thread, other clients are still served meanwhile."""
    blob = os.urandom(8 << 20)
    (tmp_path / "big.bin").write_bytes(blob)
    p = poold("[pool]\nthreads = 1\n[payload]\nfile = big.bin\n[session]\nmax_messages = 0\nidle_timeout = 2m\n")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((p.host, p.port))
    time.sleep(0.2)
    with p.connect() as fast:
        assert recv_all(fast, timeout=10) == blob
    assert recv_all(slow, timeout=30) == blob
    slow.close()


def test_ipv6_loopback(poold):
    port = free_port(socket.AF_INET6, "::1")
    p = poold(f"[listen]\naddress = [::1]:{port}\n")
    with socket.create_connection(("::1", port), timeout=5) as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
        s.send(b"v6")
    p.wait_log(r"Received message 1 \(2 bytes\) from \[::1\]:\d+")


def test_dual_stack_logs_ipv4_clients_as_ipv4(poold):
    port = free_port(socket.AF_INET6, "::")
    p = poold(f"[listen]\naddress = [::]:{port}\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
        s.send(b"v4")
    line = p.wait_log(r"Received message 1 \(2 bytes\) from ")[0]
    assert " from 127.0.0.1:" in line and "ffff" not in line


def test_unix_socket(poold, tmp_path):
    path = str(tmp_path / "poold.sock")
    p = poold(f"[listen]\naddress = {path}\n")
    p.unix_path = path
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
        s.send(b"over unix")
    p.wait_log(r"Received message 1 \(9 bytes\) from unix uid 0: \"over unix\"")


def test_socket_activated_tcp(poold):
    p = poold("", activate=True)
    s = p.connect()
    assert tutorial_client(s) == [1, 2, 7, 9, 0]
    p.wait_log(r"Started: 1 systemd socket")
    p.wait_log(r"Received message", count=10)


def test_socket_activated_ipv4_ipv6_and_unix_together(poold, tmp_path):
    port6 = free_port(socket.AF_INET6, "::1")
    path = str(tmp_path / "act.sock")
    port4 = free_port()
    p = poold("", activate=True, listen=[f"127.0.0.1:{port4}", f"[::1]:{port6}", path])
    with socket.create_connection(("127.0.0.1", port4), timeout=5) as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    p.wait_log(r"Started: 3 systemd sockets")
    with socket.create_connection(("::1", port6), timeout=5) as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD


def test_socket_activation_ignores_listen_addresses(poold):
    # The configured address is never bound when systemd passes a socket.
    other = free_port()
    p = poold(f"[listen]\naddress = 127.0.0.1:{other}\n", activate=True)
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other), timeout=2)


def test_binary_client_bytes_are_escaped_in_log(poold):
    p = poold()
    s = p.connect()
    recv_exact(s, 26)
    s.send(b"\x1b[2J\x00\xff\xfe;#\\")
    line = p.wait_log(r"Received message 1 \(10 bytes\)")[0]
    assert line.endswith('"\\x1b[2J\\x00\\xff\\xfe\\x3b\\x23\\\\"')
    assert "\x1b" not in "".join(p.log())
    s.close()


def test_busy_pool_serves_prompt_and_late_clients_alike(poold):
    """With one worker and a queue that is never empty, a conn waiting for
    its client is requeued for another look before it is parked: clients
    that answer at once and clients that answer late must both get their
    payload, and every message of every client must be logged once."""
    p = poold("[pool]\nthreads = 1\n[session]\nmax_messages = 3\n[log]\nmessages = yes\n")
    clients, per_round = [], 50
    for rnd in range(4):  # bounded: 200 clients in all
        socks = [p.connect() for _ in range(per_round)]
        for i, s in enumerate(socks):
            assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
            late = i % 2 == 1
            clients.append((s, late, b"r%dc%d" % (rnd, i)))
        # Prompt clients answer now, in a burst, while the pool is busy.
        for s, late, tag in clients[-per_round:]:
            if not late:
                s.send(tag + b"-1")
        time.sleep(0.1)
    # Late clients answer only now, long after their conn had to be parked.
    for s, late, tag in clients:
        if late:
            s.send(tag + b"-1")
    for s, late, tag in clients:
        time.sleep(0.001)
        s.send(tag + b"-2")
    for s, _, _ in clients:
        s.shutdown(socket.SHUT_WR)
    for s, _, _ in clients:
        assert recv_all(s, timeout=10) == b""
        s.close()
    lines = p.wait_log(r"Closed connection \d+ from", count=len(clients), timeout=20)
    # The two sends of one client may arrive as one read: 1 or 2 messages.
    assert all(re.search(r"sent 26 of 26 bytes, [12] messages \((\d+) bytes\) received, closed by client", l)
               for l in lines), [l for l in lines if "closed by client" not in l][:3]
    received = "|".join(l.split('"')[1] for l in p.log() if "Received message" in l)
    for _, _, tag in clients:
        assert received.count(tag.decode() + "-1") == 1
        assert received.count(tag.decode() + "-2") == 1
