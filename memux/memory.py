# -*- test-case-name: memux.test.test_tap -*-
"""
Giving freed memory back to the operating system.

CPython frees a server's buffers (message reassembly, joined writes, socket
reads) with C's free(); glibc keeps the freed pages in its heap for reuse,
so after a burst of load the process keeps its peak resident size for ever,
although the Python heap is back to its size before (measured by a soak:
1 GiB kept, of which ``malloc_trim`` gave back all but about 100 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["trimHeap"]

_malloc_trim: object = None  # (unknown yet; False: not available)


def trimHeap() -> bool:
    """
    Return the C heap's free memory to the operating system, where the C
    library can (glibc's ``malloc_trim``, on Linux); return whether it ran.
    It takes a few milliseconds for a heap of hundreds of megabytes.
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                function = libc.malloc_trim  # glibc only (not musl)
            except (OSError, AttributeError):
                pass
            else:
                function.argtypes = [ctypes.c_size_t]
                function.restype = ctypes.c_int
                _malloc_trim = function
    if _malloc_trim is False:
        return False
    _malloc_trim(0)  # type: ignore[operator]
    return True
