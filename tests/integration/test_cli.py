"""The command line and exit codes (documented in poold(8)): 0, 64 usage,
71 system error at start, 78 configuration error, and the errors' wording."""
import os
import socket
import subprocess
import time

from harness import ROOT, Poold, free_port, poold_bin, recv_exact, slow_factor


def run(*args, **kw):
    return subprocess.run([poold_bin(), *args], capture_output=True, text=True, timeout=30, **kw)


def version():
    return open(os.path.join(ROOT, "VERSION")).read().strip()


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and r.stdout == f"poold {version()}\n"
    r = run("--help")
    assert r.returncode == 0 and "--check-config" in r.stdout and "--config FILE" in r.stdout


def test_bad_usage_exits_64():
    r = run("--frobnicate")
    assert r.returncode == 64 and "Usage: poold" in r.stderr
    r = run("extra-argument")
    assert r.returncode == 64 and 'unexpected argument "extra-argument"' in r.stderr


def test_check_config_accepts_shipped_default():
    r = run("--check-config", "--config", os.path.join(ROOT, "etc/poold.conf"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""


def test_check_config_reports_file_and_line(tmp_path):
    conf = tmp_path / "poold.conf"
    conf.write_text("[pool]\nthreads = 2\n\n[session]\nidle_timeout = soon\n")
    r = run("--check-config", "--config", str(conf))
    assert r.returncode == 78
    assert r.stderr == f"{conf}:5: idle_timeout: \"soon\" is not a duration (a whole number with ms, s, m or h)\n"


def test_start_with_bad_config_exits_78_with_file_line(tmp_path):
    conf = tmp_path / "poold.conf"
    conf.write_text("[pool]\nthreads = 0\n")
    r = run("--config", str(conf), env={**os.environ, "POOLD_LOG_TARGET": "stderr"})
    assert r.returncode == 78
    assert f"Failed to load configuration: {conf}:2: threads: 0 is out of range (1..1024)" in r.stderr


def test_missing_payload_file_is_a_clear_config_error(tmp_path):
    conf = tmp_path / "poold.conf"
    conf.write_text("[payload]\nfile = /nonexistent/payload.bin\n")
    r = run("--config", str(conf), env={**os.environ, "POOLD_LOG_TARGET": "stderr"})
    assert r.returncode == 78
    assert (f"{conf}:2: file: cannot read /nonexistent/payload.bin: No such file or directory"
            in r.stderr)


def test_missing_config_file_exits_78(tmp_path):
    r = run("--check-config", "--config", str(tmp_path / "nope.conf"))
    assert r.returncode == 78
    assert r.stderr == f"{tmp_path}/nope.conf: No such file or directory\n"


def test_address_in_use_exits_71(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        conf = tmp_path / "poold.conf"
        conf.write_text(f"[listen]\naddress = 127.0.0.1:{port}\n")
        r = run("--config", str(conf), env={**os.environ, "POOLD_LOG_TARGET": "stderr"})
    assert r.returncode == 71
    assert f"Failed to listen on 127.0.0.1:{port}: Address already in use" in r.stderr


def test_passed_datagram_socket_is_refused_with_71(tmp_path):
    conf = tmp_path / "poold.conf"
    conf.write_text("")
    port = free_port()
    p = subprocess.Popen(["systemd-socket-activate", "--datagram", "-l", f"127.0.0.1:{port}",
                          "-E", "POOLD_LOG_TARGET=stderr", poold_bin(), "--config", str(conf)],
                         stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"wake", ("127.0.0.1", port))
        _, err = p.communicate(timeout=10 * slow_factor())
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 71
    assert "Passed file descriptor 3 is not a listening TCP or unix stream socket" in err


def test_passed_socket_is_made_nonblocking(poold):
    p = poold("", activate=True)
    with p.connect() as s:
        assert recv_exact(s, 26)
    p.wait_log(r"Started: 1 systemd socket")
    with open(f"/proc/{p.pid}/fdinfo/3") as f:
        flags = int(next(l for l in f if l.startswith("flags:")).split()[1], 8)
    assert flags & os.O_NONBLOCK
    assert flags & 0o2000000  # O_CLOEXEC


def test_print_config_reads_back_identically(tmp_path):
    conf = tmp_path / "poold.conf"
    payload = bytes(range(256)) * 3 + b"   spaces at the end   "
    (tmp_path / "p.bin").write_bytes(payload)
    conf.write_text("[payload]\nfile = p.bin\n")
    r = run("--print-config", "--config", str(conf))
    assert r.returncode == 0
    # Turn the file payload into text and read it back: same bytes.
    from_text = tmp_path / "again.conf"
    text = "[payload]\ntext = " + _escape(payload) + "\n"
    from_text.write_text(text)
    r2 = run("--print-config", "--config", str(from_text))
    assert r2.returncode == 0, r2.stderr
    round_trip = tmp_path / "round.conf"
    round_trip.write_text(r2.stdout)
    r3 = run("--print-config", "--config", str(round_trip))
    assert r3.returncode == 0, r3.stderr
    assert r3.stdout.split("\n", 3)[3] == r2.stdout.split("\n", 3)[3]
    assert all(len(l) <= 198 for l in r2.stdout.splitlines())


def _escape(b):
    """Escapes b for [payload] text, continuing on indented lines (never
    splitting an escape)."""
    lines, cur = [], ""
    for c in b:
        tok = chr(c) if 0x21 <= c < 0x7f and chr(c) not in ";#\\" else "\\x%02x" % c
        if len(cur) + len(tok) > 120:
            lines.append(cur)
            cur = ""
        cur += tok
    return "\n  ".join(lines + [cur])


def test_payload_file_of_exactly_16_mib_loads(tmp_path):
    """poold.conf(5): "The payload is at most 16 MiB" - 16 MiB itself is fine."""
    conf = tmp_path / "poold.conf"
    conf.write_text("[payload]\nfile = p.bin\n")
    with open(tmp_path / "p.bin", "wb") as f:
        f.truncate(16 << 20)
    r = run("--check-config", "--print-config", "--config", str(conf))
    assert r.returncode == 0, r.stderr
    assert "# payload: 16777216 bytes\n" in r.stdout
    with open(tmp_path / "p.bin", "ab") as f:
        f.write(b"x")
    r = run("--check-config", "--config", str(conf))
    assert r.returncode == 78
    assert r.stderr == f"{conf}:2: file: {tmp_path}/p.bin is larger than 16777216 bytes\n"


def test_print_config_of_a_relative_config_reads_back_from_anywhere(tmp_path):
    """A relative "file =" is printed absolute: the output, saved beside the
    original and read back from its own directory, prints the same."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "payload.bin").write_bytes(b"\x00payload\xff")
    (tmp_path / "dir" / "poold.conf").write_text("[payload]\nfile = payload.bin\n")
    r = run("--check-config", "--print-config", "--config", "dir/poold.conf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (tmp_path / "dir" / "printed.conf").write_text(r.stdout)
    for cwd, path in ((tmp_path / "dir", "printed.conf"), ("/", str(tmp_path / "dir" / "printed.conf"))):
        r2 = run("--check-config", "--print-config", "--config", path, cwd=cwd)
        assert r2.returncode == 0, r2.stderr
        assert r2.stdout.split("\n", 2)[2] == r.stdout.split("\n", 2)[2]
    assert "# payload: 9 bytes\n" in r.stdout


def test_control_characters_in_file_names_are_escaped(tmp_path):
    """A drop-in's name goes into the error (and so into sd_notify STATUS=
    and the journal) escaped: one line, whatever the name holds."""
    conf = tmp_path / "poold.conf"
    conf.write_text("")
    (tmp_path / "poold.conf.d").mkdir()
    (tmp_path / "poold.conf.d" / "a\nSTOPPING=1.conf").write_text("[pool]\nthreads\n")
    r = run("--check-config", "--config", str(conf))
    assert r.returncode == 78
    assert r.stderr == (f"{tmp_path}/poold.conf.d/a\\nSTOPPING=1.conf:2: "
                        "syntax error (expected [section], key = value or a comment)\n")
