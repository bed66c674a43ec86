"""Smoke test of the bench: loadgen works and checks the payload, and the
harness runs end to end in --quick mode. No timing is ever asserted here."""
import json
import os
import socket
import subprocess
import time

import pytest

from common import TUTORIAL_PAYLOAD_ESCAPED, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]


@pytest.fixture(scope="module")
def bindir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench-bin")
    for name in ("loadgen", "bare_epoll", "tutorial_inetd"):
        subprocess.run(["cc"] + CFLAGS + ["-o", str(d / name), os.path.join(HERE, name + ".c")],
                       check=True, timeout=120)
    return d


def wait_listening(addr, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if addr.startswith("/"):
                s = socket.socket(socket.AF_UNIX)
                s.connect(addr)
            else:
                s = socket.create_connection(("127.0.0.1", int(addr.rsplit(":", 1)[1])), 1)
            s.recv(64)
            s.close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("server did not start on %s" % addr)


@pytest.fixture
def bare(bindir, tmp_path):
    """bare_epoll on a TCP port and a unix socket; stopped by PID."""
    procs = []

    def start(addr):
        p = subprocess.Popen([str(bindir / "bare_epoll"), addr, "10"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        wait_listening(addr)
        return addr

    yield start
    for p in procs:
        p.kill()
        p.wait(5)


def loadgen(bindir, *args, timeout=30):
    r = subprocess.run([str(bindir / "loadgen")] + list(args), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0][len("RESULT "):]), r.stdout


def test_loadgen_serves_w1_and_prints_a_summary(bindir, bare):
    addr = bare("127.0.0.1:%d" % free_port(below_ephemeral=True))
    res, out = loadgen(bindir, "-C", "-c", "4", "-n", "200", "-e", TUTORIAL_PAYLOAD_ESCAPED, addr)
    assert res["ok"] == 200 and res["errors_total"] == 0 and res["unfinished"] == 0
    assert res["ttp_us"]["n"] == 200 and res["session_us"]["n"] == 200
    for key in ("p50", "p90", "p99", "max"):
        assert key in res["ttp_us"] and key in res["session_us"]
    assert "connections/s" in out and "time to payload" in out


def test_loadgen_runs_the_tutorial_protocol_over_unix_socket(bindir, bare, tmp_path):
    addr = bare(str(tmp_path / "bare.sock"))
    res, _ = loadgen(bindir, "-q", "-c", "3", "-n", "30", "-m", "10", "-s", "16",
                     "-i", "1", "-l", "26", addr)
    assert res["ok"] == 30 and res["errors_total"] == 0


def test_loadgen_counts_a_long_payload(bindir, bare):
    addr = bare("127.0.0.1:%d" % free_port(below_ephemeral=True))
    res, _ = loadgen(bindir, "-q", "-C", "-c", "2", "-n", "10", "-l", "25", addr)
    assert res["ok"] == 0 and res["errors"]["long_payload"] == 10


def test_loadgen_counts_a_short_payload(bindir, bare):
    addr = bare("127.0.0.1:%d" % free_port(below_ephemeral=True))
    res, _ = loadgen(bindir, "-q", "-C", "-c", "2", "-n", "4", "-l", "27", "-t", "0.3", addr)
    assert res["ok"] == 0 and res["errors"]["short_payload"] == 4


def test_loadgen_counts_wrong_payload_bytes(bindir, bare):
    addr = bare("127.0.0.1:%d" % free_port(below_ephemeral=True))
    wrong = TUTORIAL_PAYLOAD_ESCAPED.replace("I7", "I8")
    res, _ = loadgen(bindir, "-q", "-C", "-n", "3", "-e", wrong, addr)
    assert res["ok"] == 0 and res["errors"]["bad_payload"] == 3


def test_loadgen_counts_refused_connections(bindir):
    addr = "127.0.0.1:%d" % free_port(below_ephemeral=True)
    res, _ = loadgen(bindir, "-q", "-C", "-n", "5", addr)
    assert res["ok"] == 0 and res["errors"]["connect_refused"] == 5


def test_loadgen_holds_idle_clients(bindir, bare):
    addr = bare("127.0.0.1:%d" % free_port(below_ephemeral=True))
    res, _ = loadgen(bindir, "-q", "-c", "2", "-n", "20", "-m", "2", "-k", "25", addr)
    assert res["idle"]["requested"] == 25 and res["idle"]["connected"] == 25
    assert res["idle"]["payload"] == 25 and res["idle"]["closed_by_server"] == 0
    assert res["ok"] == 20


def test_loadgen_is_bounded_in_time(bindir):
    # A listener that never accepts nor sends: every session must time out.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        res, _ = loadgen(bindir, "-q", "-C", "-c", "2", "-d", "0.2", "-t", "0.2",
                         "127.0.0.1:%d" % s.getsockname()[1], timeout=10)
    finally:
        s.close()
    assert res["ok"] == 0 and res["errors"]["timeout_payload"] >= 2


def test_loadgen_rejects_bad_options(bindir):
    r = subprocess.run([str(bindir / "loadgen"), "-c", "x", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "concurrency" in r.stderr


def test_harness_quick_mode_writes_a_table(bindir, tmp_path):
    out = tmp_path / "RESULTS.md"
    servers = "bare"
    poold = os.environ.get("POOLD_BIN", os.path.join(ROOT, "poold"))
    if os.access(poold, os.X_OK):
        servers += ",poold-nolog"
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "run"), "--quick",
                        "--servers", servers, "--bindir", str(bindir), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| W1 | 16 | bare epoll" in r.stdout and "| W2 | 16 | bare epoll" in r.stdout
    text = out.read_text()
    assert "Machine:" in text and "kernel:" in text and "| workload |" in text
    if "poold" in servers:
        assert "poold (messages=no)" in text


def script_module(name):
    """One of tests/bench's scripts (no .py), loaded as a module."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("bench_" + name, os.path.join(HERE, name))
    spec = importlib.util.spec_from_loader("bench_" + name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def bench_module():
    return script_module("run")


def test_sandbox_table_covers_every_setting_of_the_shipped_unit():
    """The per-setting cold-start table reads the shipped unit: every sandbox
    line, once, and nothing from outside the sandbox block."""
    b = bench_module()
    settings = b.sandbox_settings()
    names = [n for n, _ in settings]
    assert names[0] == "DynamicUser" and len(names) == len(set(names))
    lines = [line for _, group in settings for line in group]
    with open(b.SHIPPED_UNIT) as f:
        text = f.read()
    block = text.split("# Sandbox", 1)[1].split("\n[", 1)[0]
    expected = [line.strip() for line in block.splitlines()[1:]
                if "=" in line and not line.strip().startswith("#")]
    assert sorted(lines) == sorted(expected)
    assert dict(settings)["SystemCallFilter"][-1] == "SystemCallErrorNumber=EPERM"
    assert "ExecStart" not in names and "Also" not in names
    for setting in b.DESIGN_SANDBOX:
        assert setting in lines, setting


def scale_module():
    return script_module("scale")


def test_scale_picks_k_and_projects():
    """Pure parts of tests/bench/scale: which k a machine allows, how the
    concurrency is split, and the projected curve's linear model and cap."""
    s = scale_module()
    assert s.k_values(2, 1024) == [1] and s.k_values(3, 1024) == [1]
    assert s.k_values(16, 1024) == [1, 2, 4, 8] and s.k_values(16, 2) == [1, 2]
    assert s.split_conc(64, 15) == [5] * 4 + [4] * 11 and sum(s.split_conc(64, 15)) == 64
    assert s.split_conc(3, 8) == [1, 1, 1]
    proj = s.projected_series({"k": [1, 2, 4, 8], "series": [
        {"name": "a", "cpu_us_per_conn": 20.0, "serial_us_per_conn": 5.0},
        {"name": "b", "cpu_us_per_conn": 10.0, "serial_fraction": 0.5},
        {"name": "c", "cpu_us_per_conn": 25.0}]})
    assert [round(v) for v in proj[0]["cps"]] == [50000, 100000, 200000, 200000]
    assert [round(v) for v in proj[1]["cps"]] == [100000, 200000, 200000, 200000]
    assert [round(v) for v in proj[2]["cps"]] == [40000, 80000, 160000, 320000]
    assert all("projected" in p["label"] for p in proj)


def test_scale_quick_mode_writes_numbers_and_a_chart(bindir, tmp_path):
    """tests/bench/scale --quick (k=1, 1 rep, 1 s per server) end to end: the
    JSON has a row per server with numbers in it, the PNG is written, and
    --from redraws it with a projected curve. Nothing about speed is asserted."""
    pytest.importorskip("matplotlib")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("tests/bench/scale needs 2 CPUs")
    servers = []
    poold = os.environ.get("POOLD_BIN", os.path.join(ROOT, "poold"))
    if os.access(poold, os.X_OK):
        servers += ["poold-m0", "poold-nolog"]
    if os.access("/usr/sbin/nginx", os.X_OK) and \
            os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
        servers.append("nginx")
    if not servers:
        pytest.skip("neither poold nor nginx is here")
    out, png = tmp_path / "scale.json", tmp_path / "scale.png"
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "scale"), "--quick",
                        "--servers", ",".join(servers), "--poold", poold, "--bindir", str(bindir),
                        "--out", str(out), "--chart", str(png)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| k | server | conn/s |" in r.stdout
    data = json.loads(out.read_text())
    assert data["ks"] == [1] and len(data["cells"]) == len(servers)
    assert [row["server"] for row in data["rows"]] == servers
    for row in data["rows"]:
        assert row["k"] == 1 and row["cps"] > 0 and row["cpu_us_per_conn"] > 0
        assert 0 < row["busiest_share"] <= 1 and row["threads_working"] >= 1
        assert row["bound_by"]
        if row["server"] != "nginx" and "nginx" in servers:
            assert row["cps_vs_nginx"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "again.svg"
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "scale"), "--from", str(out),
                        "--chart", str(svg), "--projected", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "projected" in svg.read_text()
