"""A checkpoint file mapped into memory, copy-on-write, its pages mapped ahead on Linux.

``torch.UntypedStorage.from_file(path, shared=False)`` maps the file privately, as
``torch.load(mmap=True)`` does: tensors are views of the page cache, and a write to one never
reaches the file. Each page then costs a fault on first touch (about 35 ms per 356 MB here),
paid inside the first forward pass. On Linux (5.14 and later) ``madvise(MADV_POPULATE_READ)``
maps the cached pages in one call, without copying them (read faults keep copy-on-write). It
runs on a thread, since ctypes releases the GIL, while the model is built, so it mostly costs no
time on the clock. Elsewhere, or on an older kernel, pages fault in as they are used.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading
from pathlib import Path
from typing import cast

import torch

__all__ = ["map_file"]

_MADV_POPULATE_READ = 22  # <linux/mman.h>; Python's mmap module does not name it yet
_CHUNK = 16 << 20


def map_file(path: Path, size: int) -> torch.UntypedStorage:
    """The ``size`` bytes of the file at ``path``, mapped copy-on-write; pages mapped ahead."""
    # Positional arguments: the size keyword is ``size`` in torch 2.1, ``nbytes`` later.
    mapping = cast(torch.UntypedStorage, torch.UntypedStorage.from_file(str(path), False, size))
    if sys.platform.startswith("linux") and size:
        # The thread holds the mapping, so it cannot be unmapped under the call.
        threading.Thread(
            target=_populate, args=(mapping,), name="wsl-images-page-in", daemon=True
        ).start()
    return mapping


def _populate(mapping: torch.UntypedStorage) -> None:
    try:  # the C library's madvise; a libc without it (or no libc to open) maps nothing ahead
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    start = mapping.data_ptr()
    aligned = start - start % mmap.PAGESIZE  # mmap returns whole pages: already aligned
    end = start + mapping.nbytes()
    # In chunks: the call holds the process's memory-map lock, which the loading thread's own
    # allocations (mmap, munmap) need too. A failure (EINVAL before Linux 5.14) only leaves the
    # pages to fault in as they are used.
    for chunk in range(aligned, end, _CHUNK):
        if madvise(chunk, min(_CHUNK, end - chunk), _MADV_POPULATE_READ) != 0:
            return
