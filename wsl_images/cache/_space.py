"""What to tell a user whose cache disk is full: the space needed and free, the unfinished
downloads taking space (on a shared cache, often other hosts'), and what to do."""

from __future__ import annotations

import shutil
from pathlib import Path

from .._util import BEAT_LOST_S, SILENT_S, TempEntry, host_id, temp_files
from ._paths import DERIVED, meta_dir

__all__ = ["no_space_message"]


def no_space_message(folder: Path, name: str, exc: OSError, needed: int | None) -> str:
    """The message of a download of ``name`` into ``folder`` that ran out of space (``needed``:
    the file's size, if known), written after its own partial file was removed."""
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    size = f"it needs {_size(needed)}" if needed is not None else "its size was not announced"
    room = f", {_size(free)} are free" if free is not None else ""
    text = [
        f"No space left in {str(folder)!r} for {name}: {size}{room} ({exc.strerror or exc}). "
        "The partial download was removed; the cached files are as they were."
    ]
    meta = meta_dir(folder)
    leftovers = [t for where in (folder, meta, meta / DERIVED) for t in temp_files(where)]
    leftovers = [t for t in leftovers if t.size > 0]
    if leftovers:
        total = sum(t.size for t in leftovers)
        text.append(f"Unfinished downloads and writes take {_size(total)} of it:")
        text += [f"  {t.path.name}  {_size(t.size)}, {_describe(t)}" for t in leftovers]
    amount = "some space"
    if needed is not None and free is not None and needed > free:
        amount = f"at least {_size(needed - free)}"
    elif needed is not None and free is not None:  # room now: others write too, or a quota
        text.append(
            "That is enough now that the partial download is gone: other writers filled the "
            "disk meanwhile, or a quota (not shown in the free space) is exceeded."
        )
    how = "remove other files"
    if leftovers:
        how = "wait for the downloads above that run, remove those whose writer is gone, or " + how
    text.append(
        f"Free {amount} ({how}), or point WSL_IMAGES_CACHE at a larger disk, then try again."
    )
    return "\n".join(text)


def _describe(temp: TempEntry) -> str:
    """Who wrote a leftover, and what becomes of it."""
    where = "this host" if temp.host == host_id() else temp.host
    who = f"written by {where} (pid {temp.pid}), last touched {_ago(temp.silent_s)} ago"
    if temp.abandoned:
        return (
            f"{who}: its writer is gone (removed by the next download or `wsl-images cache clear`)"
        )
    if temp.heartbeat:
        return (
            f"{who}: a download still running, or killed less than {_ago(BEAT_LOST_S)} ago "
            f"(removed automatically after {_ago(BEAT_LOST_S)} of silence)"
        )
    return (
        f"{who}, by a writer without heartbeat (an older wsl-images, an export): removed "
        f"automatically after {_ago(SILENT_S)} of silence; remove it by hand if it no longer runs"
    )


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB ({n:,} bytes)" if n >= 10**8 else f"{n:,} bytes"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
