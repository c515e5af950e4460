"""benchmarks/gpu.py --quick: the GPU benchmark's every section, end to end on the CPU (tiny
sizes, torchvision's CPU JPEG decoder standing in for nvJPEG), so that the script a GPU lease
runs cannot rot. Its figures are not checked: they say nothing about a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_mode_runs_every_section(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    argv = [sys.executable, "benchmarks/gpu.py", str(out), "--quick", "--no-tests"]
    proc = subprocess.run(
        [*argv, "--work", str(tmp_path / "work")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(out.read_text())
    assert {"machine", "plan", "load", "model_alone", "decode_only", "runs", "agreement"} <= set(
        got
    )
    assert {"first_result", "targets", "tests", "seconds"} <= set(got)
    assert {"gpu", "cores", "torch", "torchvision", "default_workers"} <= set(got["machine"])
    (load,) = got["load"]
    assert {"original", "first", "cached", "bfloat16"} <= set(load)
    assert {r["dtype"] for r in got["model_alone"]} == {"float32", "bfloat16"}
    assert {"cpu_workers", "device", "workers"} == set(got["decode_only"])
    flags = [(r["command"], r["flags"]) for r in got["runs"]]
    assert ("classify", "(defaults)") in flags and ("embed", "(defaults)") in flags
    for command in ("classify", "embed"):
        for decode in ("auto", "cpu", "gpu"):
            assert (command, f"--dtype bfloat16 --decode {decode}") in flags
    decodes = {r["flags"]: r["decode"] for r in got["runs"] if r["command"] == "evaluate"}
    assert decodes == {
        "(defaults)": "cpu",
        "--dtype bfloat16": "cpu",
        "--dtype bfloat16 --decode auto": "hybrid",
    }
    assert all(r["img_s"] > 0 for r in got["runs"])
    agreement = got["agreement"]
    assert agreement["images"] == got["plan"]["big"] and agreement["cosine_min"] > 0.999
    assert {"first_line_s", "import_and_init_s", "model_load_s", "overhead_s"} == set(
        got["first_result"]
    )
    assert "met_default_rate" in got["targets"] and got["tests"] == {"skipped": True}
    assert "| command | flags | steady img/s | end to end (s) |" in proc.stdout
