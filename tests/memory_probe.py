"""Run in a fresh process: memory growth of one get_model(..., dtype=...) load, as JSON.

Usage: python tests/memory_probe.py CHECKPOINT NAME DTYPE [mmap] (``mmap``: the load maps the
file, else reads it). Prints bytes: the checkpoint's float32 tensors, the loaded model's tensors,
the peak RSS growth during the load (VmHWM, reset just before it) and the anonymous-memory
growth that remains after it.
"""

from __future__ import annotations

import gc
import json
import re
import sys
import threading
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsl_images import get_model
from wsl_images.checkpoints import read_state_dict


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    found = re.findall(r"^(VmHWM|VmRSS|RssAnon):\s+(\d+) kB", text, re.MULTILINE)
    return {key: int(kb) * 1024 for key, kb in found}


def main() -> None:
    path, name, dtype_name = sys.argv[1:4]
    mmap = sys.argv[4:5] == ["mmap"]
    dtype = getattr(torch, dtype_name)
    # Imports happen before the window: a model built on meta imports what a load needs.
    get_model(name, pretrained=False, device="meta")
    source = read_state_dict(Path(path), mmap=True)  # either format, no anonymous copy
    fp32 = sum(t.numel() * t.element_size() for t in source.values() if t.is_floating_point())
    del source
    for thread in threading.enumerate():  # the page-in thread holds the mapping until done
        if thread.name == "wsl-images-page-in":
            thread.join()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status()
    model = get_model(name, checkpoint_path=path, dtype=dtype, mmap=mmap)
    gc.collect()
    after = _status()
    tensors = model.state_dict().values()
    print(
        json.dumps(
            {
                "fp32_bytes": fp32,
                "loaded_bytes": sum(t.numel() * t.element_size() for t in tensors),
                "dtypes": sorted({str(t.dtype) for t in tensors}),
                "peak": after["VmHWM"] - before["VmRSS"],
                "anon_after": after["RssAnon"] - before["RssAnon"],
            }
        )
    )


if __name__ == "__main__":
    main()
