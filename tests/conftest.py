"""pytest fixtures for every test folder; the helpers live in harness.py
(a module name no other conftest.py can shadow), and in tests/lib (common.py:
payload, free_port, wait_until; box.py, container.py: containers), both put
on sys.path here for every folder."""
import os
import sys

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
for _d in (os.path.join(_TESTS, "lib"), _TESTS):
    if _d not in sys.path:
        sys.path.insert(0, _d)

from harness import FIGURES, Poold, poold_bin  # noqa: E402


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("poold figures")
        for name, value in FIGURES:
            terminalreporter.write_line("%s: %s" % (name, value))


@pytest.fixture
def figures(record_property):
    """figures(name, value): a measured number, printed at the end of the run
    and kept as a junit property."""
    def record(name, value):
        FIGURES.append((name, value))
        record_property(name, value)
        print("FIGURE %s: %s" % (name, value), file=sys.stderr)
    return record


@pytest.fixture
def poold(tmp_path):
    started = []

    def start(config="", directory=None, **kw):
        p = Poold(directory or str(tmp_path), config, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.returncode is None:
            p.stop()
        reports = p.sanitizer_reports()
        assert not reports, "sanitizer reported:\n" + "\n".join(p.log())


@pytest.fixture(scope="session")
def bin_path():
    path = poold_bin()
    assert os.access(path, os.X_OK), f"{path} missing: run make first"
    return path
