"""valgrind memcheck over one poold life: start, tutorial clients with
messages, resets, a half-close, a large payload file, a good and a bad
reload, refusals past max_connections, SIGTERM. Memcheck must report no
error and no definite or indirect leak (valgrind exits 99 otherwise). The
whole integration suite runs the same way with tests/reliability/valgrind-check.
Release build only: valgrind cannot run a sanitizer build."""
import os
import shutil
import signal
import socket
import struct

import pytest

from harness import TUTORIAL_PAYLOAD, poold_bin, recv_all, recv_exact
from reliability_helpers import HERE, figure, read_all, sanitizer_of


@pytest.mark.skipif(sanitizer_of() != "", reason="valgrind cannot run a sanitizer build")
def test_valgrind_memcheck_one_poold_life(poold, tmp_path, monkeypatch):
    if not shutil.which("valgrind"):
        if os.environ.get("CI") == "true":
            pytest.fail("valgrind is not installed")
        pytest.skip("valgrind is not installed")
    logdir = tmp_path / "vg"
    monkeypatch.setenv("POOLD_REAL_BIN", poold_bin())
    monkeypatch.setenv("VALGRIND_LOG_DIR", str(logdir))
    monkeypatch.setenv("POOLD_BIN", os.path.join(HERE, "valgrind-poold"))
    monkeypatch.setenv("SANITIZE", "valgrind")  # the harness stretches its waits
    blob = os.urandom(2 << 20)
    (tmp_path / "big.bin").write_bytes(blob)
    p = poold("[pool]\nthreads = 3\n[limits]\nmax_connections = 8\noverload = busy\n", notify=True)
    for i in range(10):
        with p.connect() as s:
            assert recv_exact(s, 26, timeout=20) == TUTORIAL_PAYLOAD
            s.sendall(b"message %d \x00\xff" % i)
    for _ in range(5):
        s = p.connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    p.wait_log(r"Closed connection", count=15, timeout=20)
    held = [p.connect() for _ in range(8)]
    for s in held:
        recv_exact(s, 26, timeout=20)
    with p.connect() as s:
        busy = recv_all(s, timeout=20)
    assert busy == b"busy\n", "\n".join(p.log()[-30:])
    for s in held:
        s.close()
    p.write_config(open(p.config_path).read().replace("[pool]", "[payload]\nfile = big.bin\n[pool]"))
    p.signal(signal.SIGHUP)
    p.wait_log(r"Reloaded configuration", timeout=20)
    with p.connect() as s:
        s.shutdown(socket.SHUT_WR)
        assert read_all(s, timeout=30) == blob
    good = open(p.config_path).read()
    p.write_config(good + "[pool]\nthreads = many\n")
    p.signal(signal.SIGHUP)
    p.wait_log(r"Failed to reload configuration", timeout=20)
    rc = p.stop(timeout=30)
    logs = sorted(os.listdir(logdir))
    text = "".join(open(logdir / f).read() for f in logs)
    figure("valgrind runs / bytes of valgrind reports", f"{len(logs)} / {len(text)}")
    print(text)
    assert rc == 0, f"poold under valgrind exited {rc} (99: memcheck found errors)"
    assert text == ""
