"""The CLI answers --help, list, info and usage errors without importing torch or torchvision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsl_images.cli import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "numpy", "PIL")
# Runs `python -m wsl_images ARGS` and reports, at exit, which heavy modules were imported.
PROBE = """
import atexit, json, runpy, sys
heavy = {heavy!r}
atexit.register(lambda: print("\\nLOADED " + json.dumps([m for m in heavy if m in sys.modules])))
sys.argv = ["wsl-images", *{args!r}]
runpy.run_module("wsl_images", run_name="__main__", alter_sys=True)
"""


def _run(args: list[str], tmp_path: Path) -> tuple[int, str, list[str]]:
    env = {**os.environ, "WSL_IMAGES_CACHE": str(tmp_path / "cache"), "WSL_IMAGES_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY, args=args)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    loaded = json.loads(proc.stdout.rsplit("LOADED ", 1)[1])
    return proc.returncode, proc.stdout + proc.stderr, loaded


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--help"], 0, "pre-fetch model files into the cache"),
        (["--version"], 0, "wsl-images 0.1.0"),
        (["list", "swsl"], 0, "resnext50_32x4d_swsl"),
        (["list", "nosuch"], 1, "no model matches 'nosuch'"),
        (["info", "RESNET50_SWSL"], 0, "resnet50_swsl"),
        (["cache", "list", "NOSUCH"], 2, "Unknown model 'NOSUCH'"),
        (["classify", "-o", ".", "x.jpg"], 2, "'.' is a folder: give the path of a file"),
        (["evaluate", "resnet50_swsl"], 2, "No data folder: give DIR"),
        (["export", "resnet50_swsl", "-o", "model.bin"], 2, "its extension names no format"),
        (["list"], 0, "resnext101_32x48d_wsl"),
        (["list", "*_swsl"], 0, "resnet18_swsl"),
        (["info", "ig_resnext101_32x48d"], 0, "828,411,176"),
        (["info", "resnet50_wsl"], 2, "Unknown model 'resnet50_wsl'"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["list", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["classify", "--help"], 0, "--top-k"),
        (["classify"], 2, "No inputs: give image files, folders, .tar shards"),
        (["export", "resnet50_swsl", "--format", "tflite", "-o", "x"], 2, "invalid choice"),
        (["cache", "list"], 0, "0 file(s), 0 bytes on disk"),
        (["cache", "verify"], 0, "0 file(s) hashed in full: all ok"),
        (["cache", "clear", "resnet18_ssl"], 0, ""),
        (["download"], 2, "give model NAMEs (or URLs) or --all"),
        (["download", "resnet18_ssl"], 1, "WSL_IMAGES_OFFLINE=1 forbids downloading it"),
    ],
)
def test_no_torch_import(args: list[str], code: int, says: str, tmp_path: Path) -> None:
    returncode, output, loaded = _run(args, tmp_path)
    assert returncode == code, output
    assert says in output
    assert loaded == []


def test_top_level_help_equals_the_full_parsers() -> None:
    """The help that imports nothing shows what every command module registers."""
    assert build_parser(COMMANDS).format_help() == build_parser().format_help()
