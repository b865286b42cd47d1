"""The training process keeps freed memory (glibc): big blocks are reused, not faulted in anew."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

# RSS after freeing a 256 MB block: glibc unmaps it at once by default, keeps it once told to
PROBE = """
import sys
from imgcls.cpu import keep_freed_memory
took = keep_freed_memory()
import numpy as np

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

block = np.ones(256 * 2**20, dtype=np.uint8)
del block
print(took, round(rss_mb()))
"""


def probe(**env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, check=True, capture_output=True, text=True
    )
    took, rss = done.stdout.split()
    return took, int(rss)


def test_freed_memory_stays_with_the_process() -> None:
    took, kept_rss = probe()
    assert took == "True"
    assert kept_rss > 256  # the freed block is still ours, ready for the next step


def test_the_environment_variable_leaves_glibc_as_it_is() -> None:
    took, default_rss = probe(IMGCLS_KEEP_FREED_MEMORY="0")
    assert took == "False"
    assert default_rss < 200  # unmapped on free
