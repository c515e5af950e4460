"""export_model and ``wsl-images export``: round trips, the check, no half-written files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from server import FileServer

from wsl_images import ExportError, InvalidInputError, MissingDependencyError, export_model
from wsl_images.cli import main

Served = tuple[FileServer, dict[str, Path]]


def _reference(checkpoint: Path, x: torch.Tensor) -> torch.Tensor:
    from wsl_images import get_model

    with torch.no_grad():
        return get_model("resnet18_ssl", checkpoint_path=checkpoint).eval()(x)


def test_onnx_takes_any_batch_by_default(served: Served, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    _, files = served
    out = tmp_path / "r18.onnx"
    result = export_model(
        "resnet18_ssl", out, format="onnx", checkpoint_path=files["zip"], image_size=64,
        progress=False,
    )  # fmt: skip
    assert result.path == out and result.batch_sizes == (1, 3)  # traced with 2: never seen
    assert result.max_abs_diff <= 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.onnx"]  # no temp folder left
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 5):
        x = torch.randn(batch, 3, 64, 64)
        (got,) = session.run(None, {"input": x.numpy()})
        np.testing.assert_allclose(got, _reference(files["zip"], x).numpy(), atol=1e-3, rtol=1e-3)


def test_static_batch_opts_out(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    _, files = served
    out = tmp_path / "r18.onnx"
    argv = ["export", "resnet18_ssl", "--format", "onnx", "--checkpoint", str(files["zip"])]
    assert main([*argv, "--image-size", "64", "--static-batch", "-o", str(out)]) == 0
    assert "(onnx, batch size: 1). Checked against PyTorch on a batch of 1:" in (
        capsys.readouterr().out
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": np.zeros((1, 3, 64, 64), np.float32)})
    assert got.shape == (1, 1000)
    with pytest.raises(Exception, match="Got invalid dimensions for input"):
        session.run(None, {"input": np.zeros((2, 3, 64, 64), np.float32)})


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_dynamic_batch_flag_still_accepted_with_a_notice(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, files = served
    argv = ["export", "resnet18_ssl", "--checkpoint", str(files["zip"]), "--image-size", "64"]
    out = tmp_path / "r18.pt"
    assert main([*argv, "--format", "torchscript", "--dynamic-batch", "-o", str(out)]) == 0
    assert "--dynamic-batch is deprecated" in capsys.readouterr().err
    assert out.is_file()
    both = [*argv, "--format", "onnx", "--dynamic-batch", "--static-batch", "-o", str(out)]
    assert main(both) == 2
    assert "contradict each other" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_round_trip_from_the_cli(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, files = served
    out = tmp_path / "r18.pt"
    argv = ["export", "resnet18_ssl", "--format", "torchscript", "--checkpoint", str(files["zip"])]
    assert main([*argv, "--image-size", "64", "-o", str(out)]) == 0
    assert f"Wrote {out} (torchscript, batch size: any)" in capsys.readouterr().out
    loaded = torch.jit.load(str(out))
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), _reference(files["zip"], x))


def test_mismatch_fails_and_writes_nothing(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    _, files = served
    out = tmp_path / "r18.onnx"
    # ONNX Runtime's kernels differ from PyTorch's in the last bits, so a zero tolerance fails.
    argv = ["export", "resnet18_ssl", "--format", "onnx", "--checkpoint", str(files["zip"])]
    code = main([*argv, "--image-size", "64", "--atol", "0", "--rtol", "0", "-o", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "onnx export on a batch of 1 does not match PyTorch" in err
    assert "Nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_packages_give_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what importlib sees when absent
    with pytest.raises(
        MissingDependencyError, match=r"onnxruntime.*pip install 'wsl-images\[onnx\]'"
    ):
        export_model("resnet18_ssl", tmp_path / "m.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_format_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"format 'tflite' is not supported.*onnx"):
        export_model("resnet18_ssl", tmp_path / "m", format="tflite")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"Output folder .*nope.* does not exist"):
        export_model("resnet18_ssl", tmp_path / "nope" / "m.pt", format="torchscript")


def test_compare_outputs_reports_the_difference() -> None:
    from wsl_images.export import compare_outputs

    ref = torch.zeros(2, 3)
    assert compare_outputs(ref + 1e-4, ref, atol=1e-3, rtol=0, what="x") == pytest.approx(1e-4)
    off = ref.clone()
    off[0, 1] = 0.5
    with pytest.raises(ExportError, match=r"1 of 6 outputs differ.*max \|diff\| 0.5"):
        compare_outputs(off, ref, atol=1e-3, rtol=1e-3, what="x")
