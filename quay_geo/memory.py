"""Keep the memory of long-running processes bounded: glibc malloc settings for big buffers.

Copies and uploads allocate buffers of a part's size (8 MiB and more). glibc serves blocks that
big with mmap and raises its mmap threshold to the largest block freed, after which such blocks
come from the heap and, once freed, stay in the process: a worker that had copied a 2 GiB blob
kept ~35 MB more than it used (docs/PERFORMANCE.md, case 5). A fixed threshold of 4 MiB (every
part buffer is mmapped and returned when freed; 1 MiB stream chunks stay on the reusable heap)
and two arenas stop that. ``QUAY_GEO_MALLOC_TUNE=0`` leaves malloc alone; other C libraries are
left alone too.
"""

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 4 << 20
ARENA_MAX = 2


def malloc_tune() -> bool:
    """Apply the settings above to this process (and the children it forks); True if applied."""
    if os.environ.get("QUAY_GEO_MALLOC_TUNE", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_ARENA_MAX, ARENA_MAX)
    )
    logger.debug("malloc tuned: %s", applied)
    return applied
