"""The fuzz corpus as regression inputs (make check): builds the libFuzzer
targets (tests/fuzz/run regress) and runs every file of
tests/fuzz/corpus/<target>/ once through its target under ASan+UBSan. Falls
back to a plain driver when libFuzzer is missing; fails if no compiler can
build the targets."""
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))


def test_fuzz_corpus_regressions():
    r = subprocess.run([os.path.join(HERE, "run"), "regress"], capture_output=True, text=True, timeout=600)
    print(r.stdout[-4000:])
    print(r.stderr[-4000:])
    assert r.returncode == 0, "a fuzz corpus input fails (see above)"
