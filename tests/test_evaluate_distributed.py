"""Under torchrun (2 CPU processes, gloo) evaluate gives exactly the numbers of one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evalsets import write_photos
from launch import wsl_images_cli
from server import FileServer

from wsl_images.cli import main
from wsl_images.layouts import imagenet_wnids

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]


def test_two_ranks_equal_one(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "val"
    wnids = imagenet_wnids()
    for c in range(1000):
        (data / wnids[c]).mkdir(parents=True)
    for i, photo in enumerate(write_photos(tmp_path / "pool", 13)):  # in 4 of the classes
        photo.rename(data / wnids[250 * (i % 4)] / photo.name)
    (data / wnids[500] / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    server, files = served
    url = f"{server.url}/{files['zip'].name}"
    common = ["evaluate", "resnet18_ssl", "--data", str(data), "--checkpoint", url]
    common += ["--batch-size", "3", "--workers", "0", "--no-progress"]  # 14 files: 5 batches
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main([*common, "--output", str(one)]) == 1  # the broken file
    proc = wsl_images_cli(["-v", *common, "--output", str(two)], tmp_path / "cache2")
    assert proc.returncode == 1, proc.stderr
    assert "rank 1 of 2 joined (gloo, cpu)" in proc.stderr
    assert proc.stdout.count("top-1 ") == 1  # rank 0 alone prints
    got1, got2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert got2.pop("seconds") > 0 and got1.pop("seconds") > 0
    assert got2 == got1
    assert (got1["count"], got1["failed"]) == (13, 1)
    assert got1["failures"][0]["path"].endswith("broken.jpg")
    assert capsys.readouterr().out.count("top-1 ") == 1
