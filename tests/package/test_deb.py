"""The .deb: built from the tree and lintian-clean (packaging/mkdeb.sh), its
metadata and maintainer scripts, and its life on a real Debian bookworm with a
real systemd: install, serve, log, man, upgrade, remove, purge.

Each container test boots the cached debootstrapped root with a throwaway
overlay (tests/lib/container.py), so each starts from a clean system; the
container has no network, so apt resolves poold's dependencies from the
root's own package lists and apt cache.
"""

import os
import subprocess
import time

from common import TUTORIAL_PAYLOAD, wait_until

from .conftest import HERE

EXPECTED_FILES = {
    "/etc/poold/poold.conf",
    "/etc/poold/poold.conf.d",
    "/lib/systemd/system/poold-banner.socket",
    "/lib/systemd/system/poold-metrics.socket",
    "/lib/systemd/system/poold.service",
    "/lib/systemd/system/poold.socket",
    "/usr/sbin/poold",
    "/usr/share/doc/poold/README.md",
    "/usr/share/doc/poold/changelog.Debian.gz",
    "/usr/share/doc/poold/copyright",
    "/usr/share/lintian/overrides/poold",
    "/usr/share/man/man5/poold.conf.5.gz",
    "/usr/share/man/man8/poold.8.gz",
}


def dpkg_deb(*args):
    return subprocess.run(["dpkg-deb"] + list(args), check=True, timeout=60,
                          stdout=subprocess.PIPE).stdout.decode()


def control_file(deb, name):
    p = subprocess.run("dpkg-deb --ctrl-tarfile '%s' | tar -xOf - ./%s" % (deb, name),
                       shell=True, timeout=60, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL)
    return p.stdout.decode() if p.returncode == 0 else None


# ---- the built package ---------------------------------------------------------

def test_deb_builds_and_is_lintian_clean(debs):
    v1, _ = debs
    assert "lintian clean (no errors, no warnings)" in v1.log, v1.log[-4000:]
    print(v1.log[-3000:])


def test_deb_fields(debs, version):
    deb = debs[0].path
    assert dpkg_deb("-f", deb, "Package").strip() == "poold"
    assert dpkg_deb("-f", deb, "Version").strip().rsplit("-", 1)[0] == version
    depends = dpkg_deb("-f", deb, "Depends")
    for lib in ("libc6", "libinih1", "libsystemd0", "libmicrohttpd12"):
        assert lib in depends, depends
    assert control_file(deb, "conffiles").split() == ["/etc/poold/poold.conf"]


def test_deb_file_list(debs):
    listing = dpkg_deb("-c", debs[0].path)
    files = set()
    for line in listing.splitlines():
        path = line.split()[5].lstrip(".").rstrip("/")
        if not line.startswith("d") or path == "/etc/poold/poold.conf.d":
            # dh_compress gzips docs over 4 kB: README.md or README.md.gz
            files.add(path[:-3] if path.endswith("/README.md.gz") else path)
    assert files == EXPECTED_FILES, listing
    # bookworm's dh_installsystemd acts only on units under /lib/systemd/system
    assert "/usr/lib/systemd" not in listing


def test_deb_maintainer_scripts(debs):
    deb = debs[0].path
    postinst = control_file(deb, "postinst")
    prerm = control_file(deb, "prerm")
    postrm = control_file(deb, "postrm")
    # the socket: enabled and started; the service: never started, only
    # try-restarted on upgrade; the socket is never restarted
    assert "deb-systemd-helper enable 'poold.socket'" in postinst
    assert "deb-systemd-invoke start 'poold.socket'" in postinst
    assert "deb-systemd-invoke try-restart 'poold.service'" in postinst
    assert "invoke start 'poold.service'" not in postinst
    # (poold.service is only re-enabled on upgrade if an admin had enabled it)
    assert "deb-systemd-helper --quiet was-enabled 'poold.service'" in postinst
    assert "restart 'poold.socket'" not in postinst  # (also not try-restart)
    assert control_file(deb, "preinst") is None  # nothing stopped before unpack
    assert "deb-systemd-invoke stop 'poold.socket'" in prerm
    assert "deb-systemd-invoke stop poold.service" in prerm
    # the example second socket: never enabled (re-enabled on upgrade only
    # where an administrator had enabled it); deb-systemd-invoke's start skips
    # it while it is disabled; stopped on removal, never on upgrade
    assert "deb-systemd-helper enable 'poold-banner.socket'" in postinst
    assert "deb-systemd-helper --quiet was-enabled 'poold-banner.socket'" in postinst
    assert "deb-systemd-helper debian-installed 'poold-banner.socket'" in postinst
    assert "deb-systemd-invoke start 'poold-banner.socket'" in postinst
    assert "restart 'poold-banner.socket'" not in postinst
    assert "deb-systemd-invoke stop 'poold-banner.socket'" in prerm
    assert "deb-systemd-helper purge 'poold-banner.socket'" in postrm
    # the metrics socket: the same as the example one
    assert "deb-systemd-helper --quiet was-enabled 'poold-metrics.socket'" in postinst
    assert "deb-systemd-helper debian-installed 'poold-metrics.socket'" in postinst
    assert "restart 'poold-metrics.socket'" not in postinst
    assert "deb-systemd-invoke stop 'poold-metrics.socket'" in prerm
    assert "deb-systemd-helper purge 'poold-metrics.socket'" in postrm
    assert "rm -rf /etc/poold/poold.conf.d" in postrm


# ---- on a real bookworm ---------------------------------------------------------

def install(box, deb):
    out = box.apt("install", deb)
    assert "poold" in out
    return out


def client_argv(box, host="127.0.0.1", count=1, message="", stopfile=None):
    """Copies client.py in; its command line (it checks for TUTORIAL_PAYLOAD,
    given as hex: client.py runs on the container's python3-minimal alone)."""
    box.c.copy_in(os.path.join(HERE, "client.py"), "/root/client.py")
    args = ["python3", "/root/client.py", TUTORIAL_PAYLOAD.hex(), host, str(count), message]
    if stopfile:
        args.append(stopfile)
    return args


def client(box, host="127.0.0.1", count=1, message="", stopfile=None, timeout=60):
    return box.sh(client_argv(box, host, count, message, stopfile), timeout=timeout).split("\n")


def test_install_enables_socket_and_serves(box):
    install(box, box.deb1)
    assert box.sh(["systemctl", "is-enabled", "poold.socket"]).strip() == "enabled"
    assert box.state("poold.socket") == "active"
    assert "2727" in box.show("poold.socket", "Listen")
    # the package does not start the service: the first client does
    assert box.state("poold.service") == "inactive"
    # the example second socket and the metrics socket are installed, not
    # enabled, not listening
    for unit in ("poold-banner.socket", "poold-metrics.socket"):
        assert box.sh(["systemctl", "is-enabled", unit], check=False).strip() == "disabled"
        assert box.state(unit) == "inactive"

    lines = client(box, "127.0.0.1", 1, "hello-from-package-test")
    assert lines[0] == "ok 1", lines
    lines = client(box, "::1", 1, "")
    assert lines[0] == "ok 1", lines
    assert box.state("poold.service") == "active"
    assert box.show("poold.service", "ExecMainPID") != "0"

    # the raw bytes, once more, with nothing but the socket module
    raw = box.sh(["python3", "-c",
                  "import socket,sys;s=socket.create_connection(('127.0.0.1',2727),10);"
                  "s.shutdown(socket.SHUT_WR);d=b''\n"
                  "while True:\n c=s.recv(100)\n if not c: break\n d+=c\n"
                  "sys.stdout.write(repr(d))"])
    assert raw == repr(TUTORIAL_PAYLOAD)
    assert len(TUTORIAL_PAYLOAD) == 26

    def logged():
        out = box.sh(["journalctl", "-u", "poold", "--no-pager", "-o", "verbose"],
                     check=False)
        return out if "POOLD_MESSAGE=hello-from-package-test" in out else None

    journal = wait_until(logged, 10, step=0.1)
    assert journal, box.sh(["journalctl", "-u", "poold", "--no-pager"], check=False)
    assert "Received message" in journal


def test_metrics_socket_serves_prometheus_text(box):
    """libmicrohttpd comes in as a dependency, and the packaged
    poold-metrics.socket, once enabled, serves GET /metrics."""
    install(box, box.deb1)
    box.sh(["systemctl", "enable", "--now", "poold-metrics.socket"])
    assert box.state("poold-metrics.socket") == "active"
    assert client(box, "127.0.0.1", 2, "")[:2] == ["ok 1", "ok 2"]
    raw = box.sh(["python3", "-c",
                  "import socket,sys;s=socket.create_connection(('127.0.0.1',9727),10);"
                  "s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n');d=b''\n"
                  "while True:\n c=s.recv(65536)\n if not c: break\n d+=c\n"
                  "sys.stdout.write(d.decode())"])
    head, _, body = raw.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK"), head
    assert "Content-Type: text/plain; version=0.0.4" in head, head
    assert 'poold_connections_accepted_total{listener="poold"} 2\n' in body, body
    assert "# TYPE poold_session_duration_seconds histogram\n" in body, body


def test_man_pages(box):
    install(box, box.deb1)
    out = box.sh(["man", "-P", "cat", "poold"], timeout=30)
    assert "poold" in out and "NAME" in out, out[:500]
    out = box.sh(["man", "-P", "cat", "5", "poold.conf"], timeout=30)
    assert "poold.conf" in out and "NAME" in out, out[:500]


def test_upgrade_keeps_conffile_and_restarts_onto_new_binary(box, version):
    install(box, box.deb1)
    conf = box.c.read_file("/etc/poold/poold.conf").decode()
    assert "#threads = 4" in conf
    edited = conf.replace("#threads = 4", "threads = 3", 1) + "# edited by tests/package\n"
    box.c.write_file("/etc/poold/poold.conf", edited)
    box.sh(["poold", "--check-config"])
    assert client(box)[0] == "ok 1"  # starts the service (old binary)
    old_pid = box.show("poold.service", "ExecMainPID")
    sock_since = box.show("poold.socket", "ActiveEnterTimestampMonotonic")
    assert old_pid != "0"

    # clients keep coming during the whole upgrade
    loop = box.c.spawn(client_argv(box, "127.0.0.1", 0, "", "/run/stop-clients"))
    time.sleep(0.5)
    out = install(box, box.deb2)
    assert "Configuration file" not in out  # no conffile prompt
    time.sleep(0.5)
    box.sh(["touch", "/run/stop-clients"])
    stdout, stderr = loop.communicate(timeout=60)
    results = stdout.decode().split()
    oks = [r for r in stdout.decode().splitlines() if r.startswith("ok")]
    errs = [r for r in stdout.decode().splitlines() if not r.startswith("ok")]
    assert not errs, stdout.decode() + stderr.decode()
    assert len(oks) >= 5, results

    new_version = version + "+pkgtest1"
    assert box.sh(["dpkg-query", "-W", "-f", "${Version}", "poold"]).startswith(new_version)
    assert box.sh(["poold", "--version"]).strip() == "poold " + new_version
    # the edit is kept, and no conffile copies were left around
    assert box.c.read_file("/etc/poold/poold.conf").decode() == edited
    assert box.sh("ls /etc/poold").split() == ["poold.conf", "poold.conf.d"]
    assert "threads = 3" in box.sh(["poold", "--print-config"])
    # the running service was restarted onto the new binary; the socket was not
    # restarted (its queue survived)
    assert client(box)[0] == "ok 1"
    new_pid = box.show("poold.service", "ExecMainPID")
    assert new_pid not in ("0", old_pid)
    assert box.sh(["readlink", "/proc/%s/exe" % new_pid]).strip() == "/usr/sbin/poold"
    assert box.show("poold.socket", "ActiveEnterTimestampMonotonic") == sock_since
    assert box.state("poold.socket") == "active"


def test_remove_stops_and_purge_removes_config(box):
    install(box, box.deb1)
    # an administrator enabled the example socket: removal stops it too
    box.sh(["systemctl", "enable", "--now", "poold-banner.socket", "poold-metrics.socket"])
    assert client(box)[0] == "ok 1"
    assert box.state("poold.service") == "active"
    box.c.write_file("/etc/poold/poold.conf.d/50-local.conf", "[pool]\nthreads = 2\n")

    box.apt("remove", "poold")
    assert box.state("poold.socket") == "inactive"
    assert box.state("poold-banner.socket") == "inactive"
    assert box.state("poold-metrics.socket") == "inactive"
    assert box.state("poold.service") == "inactive"
    lines = client(box)
    assert lines[0].startswith("err 1") and "refused" in lines[0], lines
    assert box.sh(["sh", "-c", "test ! -e /usr/sbin/poold && echo gone"]).strip() == "gone"
    # remove keeps configuration
    assert box.sh("ls /etc/poold").split() == ["poold.conf", "poold.conf.d"]

    box.apt("purge", "poold")
    assert box.sh(["sh", "-c", "test ! -e /etc/poold && echo gone"]).strip() == "gone"
    assert box.sh(["sh", "-c", "ls /etc/systemd/system/*/poold* 2>/dev/null; true"]) == ""
    assert box.sh(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "poold"],
                  check=False).strip() in ("", "un")
