"""Large blocks straight back to the operating system. glibc raises its mmap threshold each time
a large block is freed, so after the first multi-megabyte prompt every later one comes from the
heap arenas (one per thread) and stays there: a run with 5 MB prompts kept hundreds of megabytes
resident after it had freed them. A fixed threshold keeps blocks above it in their own mappings,
unmapped on free. Elsewhere than glibc this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1024 * 1024


def return_large_blocks() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
