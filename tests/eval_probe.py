"""Run under torchrun: ``evaluate(..., context=init_from_env())``, the documented library path.

Usage: torchrun ... tests/eval_probe.py OUT_FOLDER NAME DATA CHECKPOINT. Each rank writes
``OUT_FOLDER/rank<RANK>.json``: the result (without its duration), or the error it raised. The
environment may ask for simulations (:mod:`dist_sim`), applied before ``init_from_env``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dist_sim
import platforms
import torch.distributed as dist

from wsl_images.distributed import init_from_env, leaving
from wsl_images.evaluation import evaluate


def run() -> int:
    out, name, data, checkpoint = sys.argv[1:5]
    platforms.models_on_cpu()
    done = dist_sim.apply()
    record: dict[str, Any]
    try:
        ctx = init_from_env("cpu")
        with leaving(ctx):
            result = evaluate(
                name,
                data,
                checkpoint_path=checkpoint,
                batch_size=3,
                workers=0,
                device="cpu",
                progress=False,
                context=ctx,
            ).as_dict()
        result.pop("seconds")
        # wsl-images left its own group; the caller's process group (if any) is still there.
        record = {"result": result, "initialized_after": dist.is_initialized()}
    except Exception as exc:
        record = {"error": f"{type(exc).__name__}: {exc}"}
    (Path(out) / f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
    done()
    return 0 if "result" in record else 1


if __name__ == "__main__":
    sys.exit(run())
