"""What a new user types first: output formats from file extensions, outputs checked before
any work, ``evaluate NAME DIR``, ``--version``, and the summary the command prints."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import torch
from evalsets import write_photos
from server import FileServer

import wsl_images
import wsl_images.export
from wsl_images import evaluate
from wsl_images.cli import main
from wsl_images.evaluation import imagenet_wnids

REPO = Path(__file__).resolve().parents[1]
SAMPLE = str(REPO / "examples" / "images" / "chelsea.jpg")
Served = tuple[FileServer, dict[str, Path]]


def _classify(served: Served, *args: str) -> list[str]:
    local = str(served[1]["zip"])
    return ["classify", "--model", "resnet18_ssl", "--checkpoint", local, "--workers", "0", *args]


def test_classify_takes_its_format_from_the_output_extension(
    served: Served, tmp_path: Path
) -> None:
    jsonl, table = tmp_path / "labels.jsonl", tmp_path / "labels.txt"
    upper, forced = tmp_path / "labels.CSV", tmp_path / "forced.jsonl"
    for out in (jsonl, upper, table):
        assert main([*_classify(served, "--top-k", "2", "-o", str(out)), SAMPLE]) == 0
    (record,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert record["path"] == SAMPLE and len(record["predictions"]) == 2
    rows = list(csv.reader(io.StringIO(upper.read_text())))
    assert rows[0] == ["path", "rank", "label", "index", "probability", "error"]
    assert [r[:2] for r in rows[1:]] == [[SAMPLE, "1"], [SAMPLE, "2"]]
    lines = table.read_text().splitlines()  # an extension that says nothing: the table
    assert lines[0] == SAMPLE and lines[1].strip().endswith(")")
    # An explicit --format wins over the extension.
    assert main([*_classify(served, "--format", "csv", "-o", str(forced)), SAMPLE]) == 0
    assert forced.read_text().startswith("path,rank,label,index,probability,error\n")


def test_export_takes_its_format_from_the_output_extension(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = str(served[1]["zip"])
    args = ["export", "resnet18_ssl", "--checkpoint", ckpt, "--image-size", "64"]
    script = tmp_path / "model.pt"
    assert main([*args, "-o", str(script)]) == 0
    assert torch.jit.load(str(script))(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    # Which format reaches export_model for .onnx (the ONNX path itself: tests/test_export.py).
    seen: list[str] = []
    real = wsl_images.export.export_model

    def recorded(*a: object, format: str, **kw: object) -> object:
        seen.append(format)
        return real(*a, format="torchscript", **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(wsl_images.export, "export_model", recorded)
    assert main([*args, "-o", str(tmp_path / "model.ONNX")]) == 0
    assert main([*args, "--format", "torchscript", "-o", str(tmp_path / "m.onnx")]) == 0
    assert seen == ["onnx", "torchscript"]


def test_export_without_a_format_or_a_telling_extension(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "resnet18_ssl", "-o", str(tmp_path / "model.bin")]) == 2
    err = capsys.readouterr().err
    assert "its extension names no format; give --format onnx|torchscript" in err
    assert ".onnx (ONNX) or .pt (TorchScript)" in err


@pytest.mark.parametrize("command", ["classify", "embed", "export", "evaluate"])
def test_an_output_that_is_a_folder_is_refused_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    # The checkpoint does not exist: had any loading started, that would be the error.
    ckpt = ["--checkpoint", str(tmp_path / "no-such.pth")]
    argv = {
        "classify": ["classify", *ckpt, "-o", str(folder), SAMPLE],
        "embed": ["embed", *ckpt, "-o", str(folder), SAMPLE],
        "export": ["export", "resnet18_ssl", *ckpt, "--format", "onnx", "-o", str(folder)],
        "evaluate": ["evaluate", "resnet18_ssl", str(tmp_path), *ckpt, "-o", str(folder)],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"'{folder}' is a folder: give the path of a file" in err
    assert "no-such.pth" not in err
    assert os.listdir(folder) == []


def test_a_folder_output_after_a_real_model_is_still_refused_first(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_classify(served, "-o", str(tmp_path)), SAMPLE]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere"
)
def test_an_unwritable_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["classify", "-o", str(locked / "out.jsonl"), SAMPLE]) == 2
    finally:
        locked.chmod(0o755)
    assert "is not writable" in capsys.readouterr().err


def test_embed_index_beside_the_matrix_must_not_be_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "feats.jsonl").mkdir()
    assert main(["embed", "-o", str(tmp_path / "feats.npy"), SAMPLE]) == 2
    assert "its index" in capsys.readouterr().err


@pytest.fixture(scope="module")
def val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("val")
    for i, photo in enumerate(write_photos(root / "photos", 2)):
        folder = root / "val" / imagenet_wnids()[i]
        folder.mkdir(parents=True)
        photo.rename(folder / photo.name)
    return root / "val"


def test_evaluate_takes_the_folder_positionally_and_prints_its_summary(
    served: Served, val: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(served[1]["zip"])
    base = ["evaluate", "resnet18_ssl", "--checkpoint", ckpt, "--workers", "0", "--no-progress"]
    assert main([*base, str(val)]) == 0
    printed = capsys.readouterr().out
    result = evaluate("resnet18_ssl", val, checkpoint_path=ckpt, workers=0, progress=False)
    summary = result.summary()
    assert isinstance(summary, str) and not summary.endswith("\n")
    assert printed.count("\n") == summary.count("\n") + 1
    # The timing line differs between two runs; every other line is the same.
    timing = [i for i, line in enumerate(summary.splitlines()) if " s (float32, cpu)" in line]
    assert [line for i, line in enumerate(printed.splitlines()) if i not in timing] == [
        line for i, line in enumerate(summary.splitlines()) if i not in timing
    ]
    assert main([*base, "--data", str(val)]) == 0  # the older spelling
    assert main([*base, str(val), "--data", str(val) + "/"]) == 0  # both, the same folder


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "No data folder: give DIR"),
        (["{val}", "--data", "{tmp}"], "and --data '{tmp}' differ: give the folder once"),
    ],
)
def test_evaluate_folder_usage_errors(
    extra: list[str], message: str, val: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fill(text: str) -> str:
        return text.replace("{val}", str(val)).replace("{tmp}", str(tmp_path))

    assert main(["evaluate", "resnet18_ssl", *map(fill, extra)]) == 2
    assert fill(message) in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"wsl-images {wsl_images.__version__}\n"


def test_cache_list_of_an_unknown_name_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["cache", "list", "NOSUCH"]) == 2
    assert "Unknown model 'NOSUCH'" in capsys.readouterr().err
    assert main(["cache", "clear", "NOSUCH"]) == 2  # as clear does
