"""Fixtures for the fleet test (`make fleet-check`; see fleetbox.py).

`staged_usr` is tests/system's (make install DESTDIR=<tmp> of this tree, the
release build, or POOLD_SYSTEM_DESTDIR); `fleet` builds one fleet for the
whole module: the tests run in file order on it and each leaves both hosts
in the backend. `figures` (tests/conftest.py) prints measured numbers at the
end of the run.
"""
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from container import container_support, skip_or_fail  # noqa: E402
from system.conftest import staged_usr  # noqa: E402,F401  (the fixture)

import fleetbox  # noqa: E402
from harness import FIGURES  # noqa: E402


@pytest.fixture(scope="module")
def fleet(staged_usr, tmp_path_factory):  # noqa: F811
    reason = container_support() or fleetbox.support()
    if reason:
        skip_or_fail(reason)
    t0 = time.monotonic()
    with fleetbox.Fleet(staged_usr, str(tmp_path_factory.mktemp("fleet"))) as f:
        f.timings["up"] = time.monotonic() - t0
        FIGURES.append(("fleet up (network, log host, h1, h2, HAProxy; s)", "%.1f" % f.timings["up"]))
        yield f
