"""Process-wide settings that make CPU runs faster without changing any result."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["keep_freed_memory"]

# glibc's mallopt(3) parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory for reuse instead of handing it back to the
    kernel; return whether the setting took (only on Linux with glibc; elsewhere a no-op).

    By default glibc serves every allocation over 32 MB with its own ``mmap`` and unmaps it on
    ``free``, so each new large tensor starts on fresh pages that the kernel must fault in and
    zero, page by page. Importance sampling allocates activations of ``K × B`` sequences at
    every step, and on a virtual machine that page faulting can take longer than the
    arithmetic: copying a 117 MB tensor took 45 ms with fresh pages and 5 ms with reused ones
    on the 2-core machine of ``benchmarks/``. With ``mmap`` off and trimming off, large
    blocks come from the heap and stay there when freed. It is what
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`` in the environment would do, set
    from inside the process, and it lasts until the process exits.

    The cost is memory: freed blocks stay in the process, and a heap fragments. One AF/AF
    training step on the 4 longest MuseData pieces peaked at 5.9 GiB with it against 3.7
    without, and ran no faster, so ``lnf train`` does not call it. ``lnf evaluate`` does:
    there it saved 6–12% of the time for 20–30% more peak memory (JSB validation, K = 30:
    1.27 against 1.07 GiB; the 8 longest MuseData pieces, K = 8: 6.6 against 5.1 GiB).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; the trim threshold is a C int, so 2**31 - 1 is "never".
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
