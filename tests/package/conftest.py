"""Fixtures for the package tests: build the .deb/.rpm once per session, and
boot the cached bookworm root in a throwaway container for each install test.

Run: /usr/bin/python3 -m pytest tests/package   (make package-check)
Root is needed for the container tests and the rpm scratch-root install; the
build/metadata tests run as any user. Without what a test needs it is skipped
with the reason, or fails when CI=true (tests/lib/container.skip_or_fail).
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, HERE)

from box import Box  # noqa: E402
from container import Container, container_support, skip_or_fail  # noqa: E402

import bookworm_root  # noqa: E402

BUILD_TIMEOUT = 600


def read_version():
    with open(os.path.join(REPO, "VERSION")) as f:
        return f.read().strip()


def need_tools(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        skip_or_fail("missing tools: %s" % ", ".join(missing))


def need_root(why):
    if os.geteuid() != 0:
        skip_or_fail("needs root (%s)" % why)


class Build:
    """The result of one packaging/mk*.sh run."""

    def __init__(self, rc, path, log, dist):
        self.rc, self.path, self.log, self.dist = rc, path, log, dist


def _start_script(script, dist, env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    env["DIST"] = dist
    logf = tempfile.TemporaryFile()
    p = subprocess.Popen([os.path.join(REPO, "packaging", script)], cwd=REPO, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=logf, start_new_session=True)
    return p, logf


def _finish_script(p, logf, dist):
    try:
        out, _ = p.communicate(timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)  # the process group of a script we started
        p.communicate(timeout=10)
        raise
    logf.seek(0)
    log = logf.read().decode("utf-8", "replace") + out.decode("utf-8", "replace")
    logf.close()
    lines = out.decode().strip().splitlines()
    path = lines[-1] if lines else ""
    return Build(p.returncode, path, log, dist)


@pytest.fixture(scope="session")
def version():
    return read_version()


@pytest.fixture(scope="session")
def debs(tmp_path_factory, version):
    """(v1, v2): the .deb of this tree (lintian-checked, as `make deb`), and a
    newer build of the same tree as upstream version VERSION+pkgtest1 for the
    upgrade test. Both are built at once (two dpkg-buildpackage runs)."""
    need_tools("dpkg-buildpackage", "dh", "lintian", "dpkg-deb")
    base = tmp_path_factory.mktemp("debs")
    d1, d2 = str(base / "v1"), str(base / "v2")
    for d in (d1, d2):
        os.makedirs(d)
        os.chmod(d, 0o755)  # readable by apt's _apt user inside the container
    os.chmod(str(base), 0o755)
    p1 = _start_script("mkdeb.sh", d1, {})
    p2 = _start_script("mkdeb.sh", d2, {"MKDEB_VERSION": version + "+pkgtest1",
                                        "MKDEB_LINTIAN": "0"})
    b1 = _finish_script(*p1, d1)
    b2 = _finish_script(*p2, d2)
    for b in (b1, b2):
        if b.rc != 0 or not b.path.endswith(".deb") or not os.path.exists(b.path):
            pytest.fail("packaging/mkdeb.sh failed (rc %s):\n%s" % (b.rc, b.log[-6000:]),
                        pytrace=False)
    return b1, b2


@pytest.fixture(scope="session")
def rpm_build(tmp_path_factory):
    need_tools("rpmbuild", "rpmlint", "rpm")
    dist = str(tmp_path_factory.mktemp("rpm"))
    b = _finish_script(*_start_script("mkrpm.sh", dist, {}), dist)
    if b.rc != 0 or not b.path.endswith(".rpm") or not os.path.exists(b.path):
        pytest.fail("packaging/mkrpm.sh failed (rc %s):\n%s" % (b.rc, b.log[-6000:]),
                    pytrace=False)
    return b


@pytest.fixture(scope="session")
def bookworm():
    """Path of the cached debootstrapped bookworm root (built on first use)."""
    reason = container_support()
    if reason:
        skip_or_fail(reason)
    need_tools("debootstrap")
    try:
        return bookworm_root.ensure_root()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        skip_or_fail("cannot build the bookworm root %s: %s" % (bookworm_root.ROOT, e))


@pytest.fixture
def box(bookworm, debs):
    """A booted bookworm container (tests/lib/box.py's Box) with both .debs
    bind-mounted read-only at /srv/deb1 and /srv/deb2: box.deb1 and box.deb2
    are their paths inside. Every box.sh() runs noninteractive for debconf."""
    c = Container(root=bookworm, presets=(),
                  binds_ro=[(debs[0].dist, "/srv/deb1"), (debs[1].dist, "/srv/deb2")])
    c.start()
    try:
        yield Box(c, env={"DEBIAN_FRONTEND": "noninteractive"},
                  deb1="/srv/deb1/" + os.path.basename(debs[0].path),
                  deb2="/srv/deb2/" + os.path.basename(debs[1].path))
    finally:
        try:
            c.stop()
        finally:
            c.cleanup()
