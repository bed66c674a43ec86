"""What counts against which limit: the waiting room (queue_max, the listen
backlog) turns no client of a burst away while threads are idle, unix-socket clients count per peer uid,
a reload reports the threads that really run, and send_buffer caps what the
kernel holds for one client."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from harness import TUTORIAL_PAYLOAD, recv_all, recv_exact


def burst(p, n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.setblocking(False)
        s.connect_ex((p.host, p.port))
    got = []
    for s in socks:
        s.setblocking(True)
        got.append(recv_all(s, timeout=10))
        s.close()
    return got


def test_queue_max_does_not_turn_clients_away_while_threads_are_idle(poold):
    # A backlog of one: idle loops accept a burst as fast as it arrives.
    p = poold("[pool]\nthreads = 8\nqueue_max = 1\n[session]\nmax_messages = 0\n"
              "[limits]\noverload = busy\n")
    results = []
    for _ in range(8):
        results += burst(p, 3)
        time.sleep(0.05)  # let the pool go idle again
    assert results.count(TUTORIAL_PAYLOAD) == 24, [r for r in results if r != TUTORIAL_PAYLOAD]
    assert not [l for l in p.log() if "queue_max" in l]


def connect_unix_as(path, uid):
    """A unix-socket client running as uid; returns what it read."""
    code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(10); "
            "s.connect(sys.argv[1]); d=b''\n"
            "while True:\n c=s.recv(4096)\n if not c: break\n d+=c\n"
            "sys.stdout.write(d.hex())")
    out = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                          sys.executable, "-c", code, path],
                         capture_output=True, text=True, timeout=30, check=True)
    return bytes.fromhex(out.stdout)


@pytest.fixture
def open_dir():
    """A directory other users can reach (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="poold-test-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_unix_clients_count_per_source_by_peer_uid(poold, open_dir):
    path = os.path.join(open_dir, "poold.sock")
    p = poold(directory=open_dir, config=f"[listen]\naddress = {path}\n[limits]\nper_source = 1\n[session]\nmax_messages = 0\n"
              "lingering_timeout = 10s\n")
    os.chmod(path, 0o777)
    p.unix_path = path
    held = p.connect()  # uid 0 holds its one slot: it speaks first, so it lingers
    held.sendall(b"x")
    assert recv_all(held) == TUTORIAL_PAYLOAD
    with p.connect() as again:  # uid 0 again: over per_source
        assert recv_all(again) == b""
    p.wait_log(r"Refused connection from unix uid 0: too many connections from this source \(per_source\)")
    assert connect_unix_as(path, 65534) == TUTORIAL_PAYLOAD  # another uid is another source
    p.wait_log(r"Closed connection \d+ from unix uid 65534 ")
    held.close()


def test_reload_reports_the_threads_that_really_run(poold, open_dir):
    """Under a task limit (RLIMIT_NPROC, for a user other than root), a reload
    that asks for more threads than can start says how many run, in the log
    and in STATUS=."""
    p = poold("[pool]\nthreads = 2\n", directory=open_dir, notify=True,
              wrap=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "prlimit", "--nproc=12", "--"])
    os.chmod(p.notify.path, 0o777)
    p.write_config(open(p.config_path).read().replace("threads = 2", "threads = 64"))
    p.signal(1)
    rec = p.wait_log(r"Reloaded configuration")[0]
    n = int(re.search(r"Reloaded configuration: (\d+) threads", rec).group(1))
    assert 2 < n < 64, rec
    p.wait_log(rf"Failed to start 64 worker threads: .*, running {n}, ignoring")
    p.notify.wait_for(rf"STATUS={n} workers")
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD


def test_send_buffer_caps_what_the_kernel_holds_for_a_client_that_does_not_read(poold, tmp_path):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(8 << 20))
    p = poold(f"[payload]\nfile = {payload}\n[session]\nidle_timeout = 500ms\n[limits]\nsend_buffer = 16384\n")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((p.host, p.port))
    # poold fills what the kernel lets it, parks the client, and closes it
    # at idle_timeout; the close record says how much went out.
    rec = p.wait_log(r"Closed connection 1 ", timeout=20)[0]
    sent = int(re.search(r"sent (\d+) of", rec).group(1))
    # 2 x 16 KiB of send buffer plus the client's small window: far below the
    # megabytes that the kernel's autotuning lets a lone non-reader pin.
    assert 0 < sent < 256 << 10, rec
    s.close()
