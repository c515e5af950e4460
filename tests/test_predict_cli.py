"""``classify`` and ``embed`` end to end: formats, bad inputs, atomic output, exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from imagegen import write_bad, write_good
from server import FileServer

from wsl_images import Classifier
from wsl_images.cli import main

Served = tuple[FileServer, dict[str, Path]]
GOOD = ["cmyk", "exif", "gray", "palette", "png16", "rgb", "rgba"]  # sorted like their files


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_good(root / "photos")
    write_bad(root / "bad")
    (root / "photos" / "readme.txt").write_text("not listed: not an image extension")
    return root


def _url(served: Served) -> str:
    server, files = served
    return f"{server.url}/{files['zip'].name}"


def _classify(served: Served, *args: str) -> list[str]:
    common = ["--checkpoint", _url(served), "--device", "cpu"]
    return ["classify", "--model", "resnet18_ssl", *common, *args]


def test_classify_jsonl_labels_every_mode_and_reports_every_bad_file(
    served: Served,
    tree: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    start_method: str,
) -> None:
    out = tmp_path / "labels.jsonl"
    bad = [str(tree / "bad" / f) for f in ["bomb.png", "empty.jpg", "notes.png", "truncated.jpg"]]
    inputs = [str(tree / "photos"), *bad, str(tree / "bad" / "missing.jpg")]
    args = _classify(served, "--format", "jsonl", "--top-k", "3", "--workers", "2", "-o", str(out))
    assert main([*args, "--batch-size", "4", *inputs]) == 1
    assert "5 of 12 inputs failed" in capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    stems = [Path(r["path"]).stem for r in records]
    assert stems == [*GOOD, "bomb", "empty", "notes", "truncated", "missing"]
    for r in records[: len(GOOD)]:
        assert set(r) == {"path", "predictions"} and len(r["predictions"]) == 3
        assert set(r["predictions"][0]) == {"label", "index", "probability"}
    errors = {Path(r["path"]).stem: r["error"] for r in records[len(GOOD) :]}
    assert set(records[-1]) == {"path", "error"}
    assert errors["bomb"].startswith("decompression bomb refused")
    assert errors["empty"] == "empty file (0 bytes), not an image"
    assert errors["notes"].startswith("not an image file")
    assert "truncated" in errors["truncated"]
    assert "No such file" in errors["missing"]
    assert not list(tmp_path.glob(".*part"))  # the temp file was renamed


def test_classify_table_csv_and_stdin(
    served: Served,
    tree: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rgb, empty = tree / "photos" / "rgb.jpg", tree / "bad" / "empty.jpg"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{rgb}\n\n{empty}\n"))
    assert main([*_classify(served, "--format", "csv", "--top-k", "2", "--workers", "0"), "-"]) == 1
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["path", "rank", "label", "index", "probability", "error"]
    assert [r[:2] for r in rows[1:]] == [[str(rgb), "1"], [str(rgb), "2"], [str(empty), ""]]
    assert rows[3][5] == "empty file (0 bytes), not an image"
    assert main([*_classify(served, "--top-k", "1", "--workers", "0"), str(rgb)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(rgb) and lines[1].strip().endswith(")") and len(lines) == 2


def test_a_name_stdout_cannot_encode_is_escaped_not_a_crash(
    served: Served, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on Windows, where a redirected stdout encodes in the ANSI code page (cp1252)."""
    named = tmp_path / "猫 café.jpg"
    named.write_bytes((tree / "photos" / "rgb.jpg").read_bytes())
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="cp1252", newline="\n")  # errors="strict"
    monkeypatch.setattr("sys.stdout", stdout)
    assert main([*_classify(served, "--top-k", "1", "--workers", "0"), str(named)]) == 0
    stdout.flush()
    lines = raw.getvalue().decode("cp1252").splitlines()
    assert lines[0] == str(named).replace("猫", "\\u732b")  # café is in cp1252
    assert lines[1].strip().endswith(")") and len(lines) == 2


def test_classify_matches_the_python_api(served: Served, tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.jsonl"
    assert (
        main([*_classify(served, "--format", "jsonl", "-o", str(out)), str(tree / "photos")]) == 0
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    clf = Classifier("resnet18_ssl", checkpoint_path=served[1]["zip"], workers=0, device="cpu")
    preds = clf.predict([r["path"] for r in records])
    assert [r["predictions"][0]["index"] for r in records] == [p.indices[0] for p in preds]


def test_embed_npy_and_jsonl(served: Served, tree: Path, tmp_path: Path) -> None:
    inputs = [str(tree / "photos" / "rgb.jpg"), str(tree / "bad" / "empty.jpg")]
    npy = tmp_path / "feats.npy"
    args = ["embed", "--model", "resnet18_ssl", "--checkpoint", _url(served), "--workers", "1"]
    args += ["--device", "cpu"]
    assert main([*args, "-o", str(npy), *inputs]) == 1
    matrix = np.load(npy)
    assert matrix.shape == (2, 512) and matrix.dtype == np.float32
    assert np.isfinite(matrix[0]).all() and np.isnan(matrix[1]).all()
    index = [json.loads(line) for line in (tmp_path / "feats.jsonl").read_text().splitlines()]
    assert index == [
        {"path": inputs[0], "row": 0},
        {"path": inputs[1], "row": 1, "error": "empty file (0 bytes), not an image"},
    ]
    clf = Classifier("resnet18_ssl", checkpoint_path=served[1]["zip"], device="cpu")
    expected = clf.embed(inputs[:1])
    assert np.allclose(matrix[0], expected[0].numpy(), atol=1e-5)
    jsonl = tmp_path / "feats.txt"
    assert main([*args, "-o", str(jsonl), inputs[0]]) == 0
    (line,) = jsonl.read_text().splitlines()
    assert np.allclose(json.loads(line)["embedding"], matrix[0], atol=1e-6)


def test_failed_run_leaves_no_output(
    tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_ckpt = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad_ckpt)
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    args = ["classify", "--model", "resnet18_ssl", "--checkpoint", str(bad_ckpt), "-o", str(out)]
    args += ["--device", "cpu"]
    assert main([*args, str(tree / "photos")]) == 1
    assert "wsl-images classify: error:" in capsys.readouterr().err
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth", "out.jsonl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["classify", "--model", "resnet50_wsl", "x.jpg"], "Unknown model 'resnet50_wsl'"),
        (["classify", "{empty}"], "No images found in '{empty}'"),
        (["classify", "-o", "{tmp}/no/such/out.jsonl", "x.jpg"], "folder '{tmp}/no/such'"),
        (["classify", "--device", "gpu", "x.jpg"], "Unknown device 'gpu'"),
        (["embed", "--format", "npy", "x.jpg"], "--format npy needs --output FILE.npy"),
        (["classify", "--batch-size", "0", "x.jpg"], "must be at least 1, got '0'"),
        (["classify", "--workers", "-1", "x.jpg"], "must be a whole number >= 0, got '-1'"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()

    def fill(text: str) -> str:
        return text.replace("{empty}", str(tmp_path / "empty")).replace("{tmp}", str(tmp_path))

    try:
        code = main([fill(a) for a in args])
    except SystemExit as exc:  # argparse rejects bad option values itself, with exit code 2
        code = int(exc.code or 0)
    assert code == 2
    assert fill(message) in capsys.readouterr().err
