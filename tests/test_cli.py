"""The wsl-images command: list, info, download, classify; errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from server import FileServer

from wsl_images.cli import main
from wsl_images.zoo import list_models

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "images" / "chelsea.jpg"
Served = tuple[FileServer, dict[str, Path]]


def test_list_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_models())
    assert main(["list", "*_wsl"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5
    assert main(["info", "resnext101_32x16d_swsl"]) == 0
    out = capsys.readouterr().out
    assert "Known issue" in out and "83.340" in out and "CC-BY-NC 4.0" in out


def test_unknown_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "resnet50_wsl"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'resnet50_wsl'" in err and "resnet50_swsl" in err


def test_download_through_mirror(
    served: Served,
    register_file: Callable[[str, str], None],
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, files = served
    # The registered name now carries the served file's name; the mirror provides BASE/FILENAME.
    register_file("resnet18_ssl", f"https://unreachable.invalid/x/{files['zip'].name}")
    monkeypatch.setenv("WSL_IMAGES_MIRROR", server.url + "/")
    assert main(["download", "resnet18_ssl", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(isolated_cache / files["zip"].name)
    assert main(["list", "resnet18_ssl"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("yes")


def test_classify_with_checkpoint(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, files = served
    out = tmp_path / "labels.jsonl"
    args = [
        "classify",
        "--model",
        "resnet18_ssl",
        "--checkpoint",
        str(files["legacy"]),
        "--top-k",
        "3",
        "--format",
        "jsonl",
        "--output",
        str(out),
        "--device",
        "cpu",
        str(SAMPLE),
    ]
    assert main(args) == 0
    (line,) = out.read_text().splitlines()
    record = json.loads(line)
    assert record["path"] == str(SAMPLE)
    preds = record["predictions"]
    assert len(preds) == 3
    assert preds[0]["probability"] >= preds[1]["probability"] >= preds[2]["probability"]
    assert set(preds[0]) == {"label", "index", "probability"}


def test_no_network_fails_with_a_clear_message(tmp_path: Path) -> None:
    # The README's first command, with the default retry settings (5 retries, backoff from 1 s):
    # a refused connection gets one quick retry, then the error (no minute of backoff).
    # Nothing of the caller's environment but what starts Python (Windows needs SYSTEMROOT).
    env = {k: os.environ[k] for k in ("PATH", "SYSTEMROOT") if k in os.environ}
    env |= {"WSL_IMAGES_CACHE": str(tmp_path / "c"), "WSL_IMAGES_MIRROR": "http://127.0.0.1:9"}
    proc = subprocess.run(
        [sys.executable, "-m", "wsl_images", "-v", "classify", "--device", "cpu", str(SAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "Cannot reach 127.0.0.1: the connection was refused" in proc.stderr
    assert proc.stderr.count("retrying in") == 1 and "retrying in 0.5 s" in proc.stderr
    assert "http://127.0.0.1:9/semi_weakly_supervised_resnext50_32x4-72679e44.pth" in proc.stderr
    assert "WSL_IMAGES_MIRROR" in proc.stderr
    assert "`wsl-images download resnext50_32x4d_swsl`" in proc.stderr  # the exact command


def test_offline_missing_file_names_file_and_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WSL_IMAGES_OFFLINE", "1")
    assert main(["download", "resnet50_swsl"]) == 1
    err = capsys.readouterr().err
    assert "semi_weakly_supervised_resnet50-16a12f1b.pth" in err and "wsl-images download" in err
