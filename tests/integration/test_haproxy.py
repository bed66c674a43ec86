"""A real HAProxy (Debian's haproxy) in front of poold on loopback: with
send-proxy (v1) and send-proxy-v2 poold logs the client HAProxy saw, not
HAProxy; with TLS terminated at HAProxy (a self-signed certificate made here
with openssl) and send-proxy-v2-ssl, the session shows the TLS version; and
HAProxy's own health checks (check-send-proxy, a LOCAL header) are served."""
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from harness import TUTORIAL_PAYLOAD, free_port, recv_all, slow_factor

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@pytest.fixture
def haproxy(tmp_path):
    """Starts haproxy with the given config text; stops it by PID."""
    if not os.access(HAPROXY, os.X_OK):
        pytest.fail("haproxy is not installed (make deps installs it)")
    procs = []

    def start(conf_text, port):
        conf = tmp_path / f"haproxy-{len(procs)}.cfg"
        conf.write_text(conf_text)
        r = subprocess.run([HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        p = subprocess.Popen([HAPROXY, "-db", "-f", str(conf)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(p)
        deadline = time.monotonic() + 10 * slow_factor()
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return p
            except OSError:
                time.sleep(0.05)
        raise AssertionError("haproxy did not listen")

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def haproxy_conf(front, back, send, bind_extra="", check=True):
    return f"""global
    log stderr format raw local0 warning
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{front}{bind_extra}
    default_backend be
backend be
    server poold1 127.0.0.1:{back} {send}{" check check-send-proxy inter 100ms" if check else ""}
"""


def served(port, source="127.0.0.1", tls=None):
    with socket.socket() as raw:
        raw.settimeout(5 * slow_factor())
        raw.bind((source, 0))
        raw.connect(("127.0.0.1", port))
        name = raw.getsockname()
        if not tls:
            return recv_all(raw), name
        with tls.wrap_socket(raw, server_hostname="poold.test") as s:
            return recv_all(s), name


@pytest.mark.parametrize("send, mode", [("send-proxy", "v1"), ("send-proxy-v2", "v2"), ("send-proxy-v2", "any")])
def test_haproxy_names_the_real_client(poold, haproxy, send, mode):
    back, front = free_port(), free_port()
    p = poold(f"[session]\nmax_messages = 0\n[listener lb]\nproxy_protocol = {mode}\nproxy_from = 127.0.0.1\n"
              f"address = 127.0.0.1:{back}\n", notify=True)
    haproxy(haproxy_conf(front, back, send, check=send == "send-proxy-v2"), front)
    for src in ("127.0.0.11", "127.0.0.12"):
        data, (addr, port) = served(front, src)
        assert data == TUTORIAL_PAYLOAD
        p.wait_log(rf"Closed connection \d+ from {addr.replace('.', '[.]')}:{port} \(via 127\.0\.0\.1:\d+\) "
                   r"on listener lb ")
    if send == "send-proxy-v2":
        p.notify.wait_for(r"health checks [1-9]")  # HAProxy's checks, LOCAL headers


def test_tls_terminated_at_haproxy_shows_the_tls_version(poold, haproxy, tmp_path):
    key, crt = tmp_path / "key.pem", tmp_path / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=poold.test", "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True,
                   timeout=60)
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    back, front = free_port(), free_port()
    p = poold(f"[session]\nmax_messages = 0\n[listener lb]\nproxy_protocol = v2\nproxy_from = 127.0.0.1\n"
              f"address = 127.0.0.1:{back}\n")
    haproxy(haproxy_conf(front, back, "send-proxy-v2-ssl", bind_extra=f" ssl crt {pem}", check=False), front)
    ctx = ssl.create_default_context(cafile=str(crt))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    data, (addr, port) = served(front, "127.0.0.13", tls=ctx)
    assert data == TUTORIAL_PAYLOAD
    p.wait_log(rf"Closed connection \d+ from 127\.0\.0\.13:{port} \(via 127\.0\.0\.1:\d+, TLSv1\.3\) on listener lb ")


def test_poold_refuses_haproxy_without_a_header(poold, haproxy):
    """A balancer that forgot send-proxy: poold never guesses, the client gets
    nothing and the refusal says why."""
    back, front = free_port(), free_port()
    p = poold(f"[listener lb]\nproxy_protocol = v2\nproxy_from = 127.0.0.1\nproxy_timeout = 300ms\n"
              f"address = 127.0.0.1:{back}\n")
    haproxy(haproxy_conf(front, back, "", check=False), front)
    try:
        data, _ = served(front)
    except ConnectionResetError:
        data = b""
    assert data == b""
    p.wait_log(r"on listener lb: no complete PROXY header within proxy_timeout")
