"""Golden config files: each tests/unit/config/NAME.conf has beside it
NAME.out, the exact output of `poold --print-config` (or, for a bad file, the
`--check-config` error and exit code 78). The absolute path of this folder,
which poold prints for a relative payload file, reads as @DIR@. Regenerate
deliberately with POOLD_GOLDEN_UPDATE=1 and review the diff."""
import glob
import os
import subprocess

import pytest

from harness import poold_bin

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")
CASES = sorted(glob.glob(os.path.join(HERE, "*.conf")))


@pytest.mark.parametrize("conf", CASES, ids=[os.path.basename(c) for c in CASES])
def test_golden(conf):
    r = subprocess.run([poold_bin(), "--print-config", "--config", os.path.basename(conf)], cwd=HERE,
                       capture_output=True, text=True, timeout=30)
    got = f"exit {r.returncode}\n{r.stdout}{r.stderr}".replace(os.path.realpath(HERE), "@DIR@")
    expected_path = conf[:-5] + ".out"
    if os.environ.get("POOLD_GOLDEN_UPDATE"):
        with open(expected_path, "w") as f:
            f.write(got)
    with open(expected_path) as f:
        assert got == f.read()


def test_there_are_golden_cases():
    assert len(CASES) >= 8
