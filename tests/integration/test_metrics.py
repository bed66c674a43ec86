"""The Prometheus endpoint (issue 15): GET /metrics in text format 0.0.4, on
the socket systemd passes as `metrics` or on [metrics] address, served by
libmicrohttpd's own thread. With real parts: promtool checks a live scrape
after real traffic, refusals and reloads; a real Prometheus server scrapes
poold under systemd-socket-activate and its HTTP API answers the count of
clients; a scraper that connects and never sends leaves clients unharmed;
poold(8) lists every metric a scrape has, with its type and labels.
Everything on loopback; every wait is bounded; processes stopped by PID."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from harness import ROOT, TUTORIAL_PAYLOAD, free_port, poold_bin, recv_all, slow_factor
from common import wait_until

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def need(tool):
    exe = shutil.which(tool)
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("%s missing (make deps installs it)" % tool)
        pytest.skip("%s not installed (make deps installs it)" % tool)
    return exe


def unescape(v):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse(text):
    """{(name, ((label, value), ...)): float} and {family: type} of a scrape."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, "not a sample line: %r" % line
        labels = tuple(sorted((k, unescape(v)) for k, v in LABEL_RE.findall(m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape(port, path="/metrics", method="GET", source=None, host="127.0.0.1", timeout=5.0):
    """(status, headers dict with lower-case names, body text)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout * slow_factor(),
                                   source_address=(source, 0) if source else None)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        c.close()


def metrics(port, **kw):
    status, headers, body = scrape(port, **kw)
    assert status == 200, (status, body)
    return parse(body)[0]


def fetch(port, src="127.0.0.1"):
    """A whole client session: what it got before poold closed."""
    with socket.socket() as s:
        s.settimeout(5 * slow_factor())
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        try:
            return recv_all(s)
        except ConnectionResetError:
            return b"<reset>"


def talk(port, messages):
    """A client that reads the payload, sends messages, then half-closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor()) as s:
        got = s.recv(len(TUTORIAL_PAYLOAD))
        for m in messages:
            s.sendall(m)
            time.sleep(0.02)
        s.shutdown(socket.SHUT_WR)
        return got + recv_all(s)


def test_scrape_after_traffic_refusals_and_reloads_passes_promtool(poold):
    promtool = need("promtool")
    mport = free_port()
    conf = ("[session]\nmax_messages = 2\n[limits]\ndeny = 127.0.0.66\n"
            "[metrics]\naddress = 127.0.0.1:%d\n" % mport)
    p = poold(conf)
    p.wait_log(r"Serving metrics on 127\.0\.0\.1:%d \(GET /metrics\)\." % mport)
    before = metrics(mport)
    started = value(before, "poold_config_last_reload_success_timestamp_seconds")
    assert abs(started - time.time()) < 60, started
    assert value(before, "poold_connections_accepted_total", listener="default") == 0

    for _ in range(5):
        assert talk(p.port, [b"hello", b"world!"]) == TUTORIAL_PAYLOAD
    for _ in range(3):
        assert fetch(p.port, "127.0.0.66") == b""
    p.wait_log(r"Closed connection 5 ", timeout=10)
    # One reload that works, one that does not.
    time.sleep(0.01)
    p.signal(signal.SIGHUP)
    p.wait_log(r"Reloaded configuration")
    good = open(p.config_path).read()
    p.write_config(good + "\n[pool]\nthreads = lots\n")
    p.signal(signal.SIGHUP)
    p.wait_log(r"Failed to reload configuration")
    p.write_config(good)

    status, headers, body = scrape(mport)
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4"
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr + body

    m, types = parse(body)
    assert value(m, "poold_build_info", version=open(os.path.join(ROOT, "VERSION")).read().strip()) == 1
    assert value(m, "poold_connections_accepted_total", listener="default") == 5
    assert value(m, "poold_connections_refused_total", listener="default", reason="deny") == 3
    assert value(m, "poold_connections_refused_total", listener="default", reason="max_connections") == 0
    assert value(m, "poold_messages_received_total") == 10
    assert value(m, "poold_bytes_received_total") == 5 * len(b"helloworld!")
    assert value(m, "poold_bytes_sent_total") == 5 * len(TUTORIAL_PAYLOAD)
    assert value(m, "poold_session_duration_seconds_count") == 5
    assert value(m, "poold_session_duration_seconds_bucket", le="+Inf") == 5
    assert value(m, "poold_session_duration_seconds_sum") > 0
    assert value(m, "poold_sessions_active") == 0
    assert value(m, "poold_threads", state="busy") + value(m, "poold_threads", state="idle") == 4
    assert value(m, "poold_reloads_total", result="success") == 1
    assert value(m, "poold_reloads_total", result="failure") == 1
    assert value(m, "poold_config_last_reload_success_timestamp_seconds") > started
    assert value(m, "poold_log_entries_dropped_total") == 0
    assert types["poold_session_duration_seconds"] == "histogram"
    # A scrape is not a client: the counts stayed where they were.
    assert value(metrics(mport), "poold_connections_accepted_total", listener="default") == 5


def test_prometheus_scrapes_poold_under_socket_activation(poold, tmp_path):
    prometheus = need("prometheus")
    cport, mport, wport = free_port(), free_port(), free_port()
    p = poold("[session]\nmax_messages = 0\n", activate=True,
              listen=["127.0.0.1:%d" % cport, "127.0.0.1:%d" % mport], fdnames=["poold", "metrics"])
    clients = 12
    for _ in range(clients):
        assert fetch(cport) == TUTORIAL_PAYLOAD
    p.wait_log(r"Started: 1 systemd socket, ")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: poold\n    static_configs:\n"
        "      - targets: ['127.0.0.1:%d']\n" % mport)
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([prometheus, "--config.file=%s" % (tmp_path / "prometheus.yml"),
                             "--storage.tsdb.path=%s" % (tmp_path / "data"),
                             "--web.listen-address=127.0.0.1:%d" % wport, "--log.level=warn"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=str(tmp_path))
    try:
        def query(q):
            url = "http://127.0.0.1:%d/api/v1/query?%s" % (wport, urllib.parse.urlencode({"query": q}))
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    data = json.load(r)
            except OSError:
                return None
            assert data["status"] == "success", data
            return data["data"]["result"]

        got = wait_until(lambda: query('poold_connections_accepted_total{job="poold"}'), 60, step=0.5,
                         what="Prometheus to have scraped poold_connections_accepted_total")
        assert len(got) == 1, got
        assert got[0]["metric"]["listener"] == "poold", got
        assert got[0]["metric"]["instance"] == "127.0.0.1:%d" % mport, got
        assert float(got[0]["value"][1]) == clients, got
        up = query('up{job="poold"}')
        assert up and up[0]["value"][1] == "1", up
        # A histogram Prometheus can take a quantile of.
        q = query('histogram_quantile(0.5, poold_session_duration_seconds_bucket{job="poold"})')
        assert q and 0 < float(q[0]["value"][1]) <= 0.001 * 5, q
    finally:
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()
    # The metrics socket never reached the reactor: no client was accepted on it.
    assert fetch(cport) == TUTORIAL_PAYLOAD
    assert value(metrics(mport), "poold_connections_accepted_total", listener="poold") == clients + 1


def test_silent_scrapers_leave_clients_and_other_scrapers_unharmed(poold):
    mport = free_port()
    p = poold("[session]\nmax_messages = 0\n[metrics]\naddress = 127.0.0.1:%d\n" % mport)
    p.wait_log(r"Serving metrics on")
    silent = []
    try:
        # More than the endpoint's 16 connections, all from one address,
        # none of which ever sends a byte.
        for _ in range(24):
            s = socket.create_connection(("127.0.0.1", mport), timeout=5)
            silent.append(s)
        t0 = time.monotonic()
        for _ in range(50):
            assert fetch(p.port) == TUTORIAL_PAYLOAD
        clients_s = time.monotonic() - t0
        assert clients_s < 5 * slow_factor(), clients_s
        # A scraper from another address still gets in (4 connections per
        # address at most), and sees the 50 clients.
        m = metrics(mport, source="127.0.0.2")
        assert value(m, "poold_connections_accepted_total", listener="default") == 50
        # MHD closes a connection silent for 10 s, freeing its slot.
        held = silent[0]
        held.settimeout(20 * slow_factor())
        t0 = time.monotonic()
        try:
            assert held.recv(1) == b""
        except ConnectionResetError:
            pass
        waited = time.monotonic() - t0
        assert waited < 15 * slow_factor(), waited
    finally:
        for s in silent:
            s.close()
    # Once MHD has seen them close (a scrape may be turned away until then).
    m = wait_until(lambda: _try_metrics(mport), 5, what="a scrape from the address that held the silent connections")
    assert value(m, "poold_connections_accepted_total", listener="default") == 50


def test_unknown_path_is_404_and_other_methods_405(poold):
    mport = free_port()
    poold("[metrics]\naddress = 127.0.0.1:%d\n" % mport).wait_log(r"Serving metrics on")
    for path in ("/", "/metric", "/metrics/", "/favicon.ico"):
        status, _, body = scrape(mport, path=path)
        assert status == 404, (path, status, body)
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        status, headers, _ = scrape(mport, method=method)
        assert status == 405, (method, status)
        assert headers["allow"] == "GET, HEAD"
    status, headers, body = scrape(mport, method="HEAD")
    assert status == 200 and body == "" and int(headers["content-length"]) > 1000
    assert scrape(mport, path="/metrics?x=1")[0] == 200
    # One connection, several scrapes (as Prometheus keeps it alive).
    c = http.client.HTTPConnection("127.0.0.1", mport, timeout=5)
    for _ in range(3):
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert r.status == 200 and b"poold_build_info" in r.read()
    c.close()


def test_standalone_metrics_address_is_off_by_default(poold):
    p = poold("[session]\nmax_messages = 0\n")
    assert fetch(p.port) == TUTORIAL_PAYLOAD
    p.stop()
    assert not [l for l in p.log() if "metrics" in l.lower()], p.log()


def test_standalone_metrics_on_ipv6_and_unix_socket(poold, tmp_path):
    mport = free_port(socket.AF_INET6, "::1")
    p = poold("[session]\nmax_messages = 0\n[metrics]\naddress = [::1]:%d\n" % mport)
    p.wait_log(r"Serving metrics on \[::1\]:%d " % mport)
    assert fetch(p.port) == TUTORIAL_PAYLOAD
    m = wait_until(lambda: _try_metrics(mport, host="::1"), 5, what="a scrape over IPv6")
    assert value(m, "poold_connections_accepted_total", listener="default") == 1
    path = str(tmp_path / "metrics.sock")
    os.makedirs(tmp_path / "unix")
    q = poold("[metrics]\naddress = %s\n" % path, directory=str(tmp_path / "unix"))
    q.wait_log(r"Serving metrics on %s " % re.escape(path))
    r = subprocess.run(["curl", "-sS", "--unix-socket", path, "http://poold/metrics"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "poold_build_info" in r.stdout, r.stderr


def test_metrics_address_errors_are_clear(poold, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[pool]\nthreads = 2\n\n[metrics]\naddress = localhost\n")
    r = subprocess.run([poold_bin(), "--check-config", "--config", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78
    assert r.stderr.startswith('%s:5: [metrics] address: "localhost" is not host:port' % conf), r.stderr
    conf.write_text("[listener metrics]\ntext = x\n")
    r = subprocess.run([poold_bin(), "--check-config", "--config", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78 and "[listener metrics]: the socket named metrics serves GET /metrics" in r.stderr
    # A port already taken: exit 71 (EX_OSERR), naming the key.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        p = poold("[metrics]\naddress = 127.0.0.1:%d\n" % port, wait_ready=False)
        assert p.proc.wait(timeout=10 * slow_factor()) == 71
        p.wait_log(r"Failed to listen on \[metrics\] address 127\.0\.0\.1:%d: Address already in use" % port)


def test_metrics_address_is_ignored_when_socket_activated(poold):
    mport = free_port()
    p = poold("[session]\nmax_messages = 0\n[metrics]\naddress = 127.0.0.1:%d\n" % mport, activate=True)
    assert fetch(p.port) == TUTORIAL_PAYLOAD
    p.wait_log(r"\[metrics\] address = 127\.0\.0\.1:%d is not used: systemd passed the sockets and none named "
               r"metrics \(enable poold-metrics\.socket\), ignoring\." % mport)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mport), timeout=2).close()


def test_metrics_fd_is_not_a_client_listener(poold):
    cport, mport = free_port(), free_port()
    p = poold("[session]\nmax_messages = 0\n", activate=True,
              listen=["127.0.0.1:%d" % cport, "127.0.0.1:%d" % mport], fdnames=["poold", "metrics"])
    # The first connection, on the metrics socket, starts poold.
    m = metrics(mport)
    p.wait_log(r"Started: 1 systemd socket, ")
    p.wait_log(r"Serving metrics on 127\.0\.0\.1:%d " % mport)
    assert {dict(k[1]).get("listener") for k in m if k[0] == "poold_connections_accepted_total"} == {"poold"}
    # Bytes that are no HTTP get no payload, only an HTTP error.
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"hello\r\n\r\n")
        got = recv_all(s, timeout=5)
    assert TUTORIAL_PAYLOAD not in got and (got == b"" or got.startswith(b"HTTP/1.1 400")), got
    assert fetch(cport) == TUTORIAL_PAYLOAD


def launch_with_fds(config_path, client, msock):
    """poold with two sockets this test owns passed as LISTEN_FDS (named
    poold and metrics), as systemd passes them: the test keeps its copies,
    as systemd does, and sees what poold leaves of them."""
    env = dict(os.environ, LISTEN_FDS="2", LISTEN_FDNAMES="poold:metrics", POOLD_LOG_TARGET="stderr",
               A=str(client.fileno()), B=str(msock.fileno()))
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen(["/bin/bash", "-c", 'exec 3<&"$A" 4<&"$B"; unset A B; LISTEN_PID=$$ exec "$0" "$@"',
                             poold_bin(), "--config", config_path],
                            pass_fds=(client.fileno(), msock.fileno()), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_passed_metrics_socket_still_listens_after_poold_exits(tmp_path):
    """systemd keeps its socket when poold stops and hands it to the next
    poold: stopping the HTTP thread must not shut the socket down."""
    conf = tmp_path / "poold.conf"
    conf.write_text("[session]\nmax_messages = 0\n")
    client, msock = socket.socket(), socket.socket()
    for s in (client, msock):
        s.bind(("127.0.0.1", 0))
        s.listen(16)
    mport = msock.getsockname()[1]

    def stop(p):
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=20 * slow_factor())[1].decode(errors="replace")
        assert p.returncode == 0, err
        assert not [l for l in err.splitlines() if "Sanitizer" in l or "runtime error" in l], err

    try:
        p = launch_with_fds(str(conf), client, msock)
        try:
            wait_until(lambda: _try_metrics(mport), 10, what="poold to serve metrics")
        finally:
            stop(p)
        # Still listening: the kernel completes a connection into the
        # backlog, and the next poold answers it.
        with socket.create_connection(("127.0.0.1", mport), timeout=2) as queued:
            queued.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            p = launch_with_fds(str(conf), client, msock)
            try:
                got = recv_all(queued, timeout=10)
            finally:
                stop(p)
        assert got.split(b"\r\n", 1)[0].endswith(b" 200 OK") and b"poold_build_info" in got, got[:200]
    finally:
        client.close()
        msock.close()


def _try_metrics(port, **kw):
    try:
        return metrics(port, timeout=1, **kw)
    except OSError:
        return None


def man_metrics():
    """{name: (type, [labels])} from the METRICS section of poold.8."""
    text = open(os.path.join(ROOT, "man", "poold.8")).read()
    section = text.split("\n.SH METRICS\n", 1)[1].split("\n.SH ", 1)[0]
    out = {}
    for m in re.finditer(r"^\.TP\n\.B (poold_\w+)\n(.*?)(?=^\.TP|^\.SS|^\.PP|\Z)", section, re.M | re.S):
        body = m.group(2).replace("\\-", "-").replace("\\(em", "-")
        t = re.match(r"(counter|gauge|histogram), (?:no labels|labels? (.*?))\.\n", body)
        assert t, "%s: the entry must start with its type and labels: %r" % (m.group(1), body[:80])
        out[m.group(1)] = (t.group(1), sorted(re.findall(r"\w+", t.group(2) or "")))
    return out


def test_man_page_lists_every_metric_with_type_and_labels(poold):
    mport = free_port()
    p = poold("[metrics]\naddress = 127.0.0.1:%d\n" % mport)
    p.wait_log(r"Serving metrics on")
    samples, types = parse(scrape(mport)[2])
    live = {}
    for (name, labels), _ in samples.items():
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        live.setdefault(family, set()).update(k for k, _ in labels if k != "le")
    documented = man_metrics()
    assert set(documented) == set(types), (sorted(set(documented) ^ set(types)))
    for name, (kind, labels) in documented.items():
        assert kind == types[name], name
        assert labels == sorted(live[name]), (name, labels, live[name])
