"""Fixtures for tests under a real systemd (see tests/lib/container.py).

`staged_usr` runs `make install DESTDIR=<tmp>` of this tree once per session
and returns the /usr tree laid over the container's /usr; `box` boots a
fresh container per test with that install, /etc/poold from the install, the
test client in /root/client.py, and poold.socket enabled and started.
`figures` (tests/conftest.py) collects measured numbers; container boot times
are printed at the end of the run.
"""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, HERE)

from container import container_support, skip_or_fail, stage_merged_usr  # noqa: E402
from sysbox import booted_box  # noqa: E402

_BOOTS = []


def pytest_terminal_summary(terminalreporter):
    if _BOOTS:
        b = sorted(_BOOTS)
        terminalreporter.section("poold container boots")
        terminalreporter.write_line(
            "container boot to running (s): n=%d min %.2f median %.2f max %.2f"
            % (len(b), b[0], b[len(b) // 2], b[-1]))


@pytest.fixture(scope="session")
def staged_usr(tmp_path_factory):
    reason = container_support()
    if reason:
        skip_or_fail(reason)
    dest = str(tmp_path_factory.mktemp("destdir"))
    pre = os.environ.get("POOLD_SYSTEM_DESTDIR")
    if pre:
        # A tree already installed with `make install DESTDIR=...` (packaging
        # checks, or iterating on these tests without a rebuild).
        shutil.copytree(pre, dest, symlinks=True, dirs_exist_ok=True)
        return _finish_stage(dest)
    r = subprocess.run(["make", "-C", REPO, "install", "DESTDIR=" + dest, "PREFIX=/usr", "SANITIZE="],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    if r.returncode != 0:
        pytest.fail("make install failed:\n" + r.stdout.decode(errors="replace")[-3000:])
    return _finish_stage(dest)


def _finish_stage(dest):
    for need in ("usr/sbin/poold", "etc/poold/poold.conf"):
        if not os.path.exists(os.path.join(dest, need)):
            pytest.fail("make install did not install /" + need)
    etc = os.path.join(dest, "etc")
    usr = stage_merged_usr(dest)
    for unit in ("poold.socket", "poold.service", "poold-banner.socket", "poold-metrics.socket"):
        if not os.path.exists(os.path.join(usr, "lib/systemd/system", unit)):
            pytest.fail("make install did not install /lib/systemd/system/" + unit)
    return {"usr": usr, "etc": etc, "dest": dest}


@pytest.fixture
def box(staged_usr):
    with booted_box(staged_usr) as b:
        _BOOTS.append(b.c.boot_seconds)
        yield b
