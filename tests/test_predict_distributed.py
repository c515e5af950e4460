"""Under torchrun (2 CPU processes, gloo) classify/embed give exactly the single-process output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from imagegen import photo, write_bad
from launch import wsl_images_cli
from server import FileServer

from wsl_images.cli import main

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    for i in range(6):
        photo(seed=i).save(folder / f"img{i}.jpg")
    write_bad(folder / "zbad")  # sorted last: bomb, empty, notes, truncated
    (folder / "zbad" / "bomb.png").unlink()  # keep the test light
    return folder


def test_two_ranks_equal_one(
    served: Served, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, files = served
    url = f"{server.url}/{files['zip'].name}"
    before = server.requests[f"/{files['zip'].name}"]
    common = ["--model", "resnet18_ssl", "--checkpoint", url, "--batch-size", "2"]
    common += ["--workers", "1", "--no-progress", str(images)]
    outputs = {}
    for ranks in (1, 2):
        out, npy = tmp_path / f"labels{ranks}.jsonl", tmp_path / f"feats{ranks}.npy"
        classify = ["classify", "--format", "jsonl", "-o", str(out), *common]
        embed = ["embed", "-o", str(npy), *common]
        if ranks == 1:  # in this process, with this process's threads
            assert main(classify) == 1 and main(embed) == 1
            assert "3 of 9 inputs failed" in capsys.readouterr().err
        else:
            for args in (classify, embed):
                proc = wsl_images_cli(args, tmp_path / "cache2")
                assert proc.returncode == 1, proc.stderr  # 3 bad files among 9 inputs
                assert "3 of 9 inputs failed" in proc.stderr
        outputs[ranks] = (out.read_text(), np.load(npy), npy.with_suffix(".jsonl").read_text())
    text1, feats1, index1 = outputs[1]
    text2, feats2, index2 = outputs[2]
    assert len(text1.splitlines()) == 9 and text2 == text1
    assert index2 == index1
    np.testing.assert_array_equal(feats2, feats1)
    # Each run downloads into its own cache; the 2-rank run fetched the file once, not twice.
    assert server.requests[f"/{files['zip'].name}"] - before == 2
