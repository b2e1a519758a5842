"""rnnkit._memory: freed blocks are kept for reuse (glibc), so a step's arrays are not page-faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, numpy as np, rnnkit._blas, rnnkit._memory as m
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():                             # a step's worth of arrays: allocated, touched, all freed at the end
    arrays = [np.ones(2 << 20, np.float32) for _ in range(8)]   # 8 x 8 MiB
    del arrays
step()
before = faults()
for _ in range(5):
    step()
print(m.MALLOC_TUNED, faults() - before)
"""


def _run(env_value: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != "RNNKIT_MALLOC_TUNING"}
    if env_value is not None:
        env["RNNKIT_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_arrays_are_reused_without_page_faults() -> None:
    tuned, faults = _run(None)
    if not tuned:
        pytest.skip("not glibc")
    # Five steps of 64 MiB (16,384 pages each) from reused heap memory: next to no faults.
    assert faults < 1000
    untouched, faults_default = _run("0")
    assert not untouched
    # glibc's default gives the freed heap back to the kernel (and maps blocks this large anew):
    # the pages are faulted in again every step.
    assert faults_default > 10_000
