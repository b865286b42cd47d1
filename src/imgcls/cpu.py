"""How a PyTorch process of imgcls uses the CPU: the allocator keeps freed memory.

glibc's malloc hands every block above its mmap threshold (at most 32 MiB) back to the kernel
when it is freed. A training step allocates activations and gradients of that size (the seeds'
CNN: 46 MB for the first convolution's output at batch 32) and frees them again, so every step
page-faults them in anew and the kernel zeroes each page: a third of the step went to system time.
Keeping freed memory in the heap (no mmap, no trimming) made a seed-basic-cnn training step 1.65x
faster on the 2-core benchmark machine (benchmarks/README.md). The process then keeps its peak
memory until it ends, which is what a training or evaluation process wants; the torch-free
predictor and server never call this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, glibc's malloc.h
KEEP_ENV = "IMGCLS_KEEP_FREED_MEMORY"  # "0" leaves glibc's defaults
_done = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks in the heap; True when it took effect (Linux, glibc)."""
    global _done
    if _done or os.environ.get(KEEP_ENV) == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    _done = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
    return _done
