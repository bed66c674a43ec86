"""The code is in the house style pinned by .clang-format (clang-format 14,
as Debian 12 ships it): a reformat changes nothing."""
import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_clang_format_clean():
    exe = shutil.which("clang-format")
    if not exe:
        if os.environ.get("CI"):
            pytest.fail("clang-format missing (make deps installs it)")
        pytest.skip("clang-format not installed (make deps installs it)")
    files = sorted(glob.glob(os.path.join(ROOT, "src", "*.[ch]")) +
                   glob.glob(os.path.join(ROOT, "tests", "unit", "*.[ch]")))
    r = subprocess.run([exe, "--dry-run", "--Werror", *files], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[:4000]
