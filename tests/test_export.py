"""export_model and ``wsl-images export``: round trips, the check, no half-written files."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from server import FileServer

from wsl_images import ExportError, InvalidInputError, MissingDependencyError, export_model
from wsl_images.cli import main
from wsl_images.export import ExportResult

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
    from wsl_images.export._export import compare_outputs

    ref = torch.zeros(2, 3)
    assert compare_outputs(ref + 1e-4, ref, atol=1e-3, rtol=0, what="x") == pytest.approx(1e-4)
    off = ref.clone()
    off[0, 1] = 0.5
    with pytest.raises(ExportError, match=r"1 of 6 outputs differ.*max \|diff\| 0.5"):
        compare_outputs(off, ref, atol=1e-3, rtol=1e-3, what="x")


# -- ONNX external data: replacing an export is atomic ------------------------------------------


@pytest.fixture
def external_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ONNX export keeps its weights in an external data file (as models over 1.5 GB)."""
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr("wsl_images.export._export._EXTERNAL_DATA_BYTES", 0)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from checkpoints import random_state_dict, save_hashed

    state = random_state_dict("resnet18_ssl", seed=7)
    return save_hashed(state, tmp_path_factory.mktemp("other"), "other", legacy=False)


def _export(checkpoint: Path, out: Path) -> ExportResult:
    return export_model(
        "resnet18_ssl", out, format="onnx", checkpoint_path=checkpoint, image_size=64,
        progress=False,
    )  # fmt: skip


def _on_disk(out: Path) -> tuple[set[str], torch.Tensor]:
    """What a reader finds at ``out``: the data files its graph reads (onnx.load resolves them,
    all weights present) and the logits ONNX Runtime computes from the pair."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(out))  # loads the external data too: fails if a file is missing
    onnx.checker.check_model(model)
    graph = onnx.load(str(out), load_external_data=False)
    locations = {
        e.value for t in graph.graph.initializer for e in t.external_data if e.key == "location"
    }
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": _PROBE.numpy()})
    return locations, torch.from_numpy(got)


_PROBE = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def _same(got: torch.Tensor, checkpoint: Path) -> bool:
    return torch.allclose(got, _reference(checkpoint, _PROBE), atol=1e-3, rtol=1e-3)


def _data_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".data"))


def test_onnx_external_data_has_a_name_of_its_own(
    served: Served, external_data: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, files = served
    out = tmp_path / "r18.onnx"
    (tmp_path / "r18.onnx.data").write_bytes(b"left by an export of an earlier version")
    (tmp_path / "r18.onnx.notes.data").write_bytes(b"not an export's: kept")
    argv = ["export", "resnet18_ssl", "--format", "onnx", "--checkpoint", str(files["zip"])]
    assert main([*argv, "--image-size", "64", "-o", str(out)]) == 0
    (data,) = set(_data_files(tmp_path)) - {"r18.onnx.notes.data"}
    sha = hashlib.sha256((tmp_path / data).read_bytes()).hexdigest()
    assert data == f"r18.onnx.{sha[:8]}.data"
    assert f"with its weights in {data} beside it" in capsys.readouterr().out
    locations, got = _on_disk(out)
    assert locations == {data} and _same(got, files["zip"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["r18.onnx", data, "r18.onnx.notes.data"]
    )
    # The same weights again: the data file is kept as it is (it is open in running sessions).
    before = (tmp_path / data).stat()
    assert _export(files["zip"], out).data_path == tmp_path / data
    assert (tmp_path / data).stat().st_ino == before.st_ino


def test_onnx_replace_killed_between_renames_leaves_old_or_new(
    served: Served,
    other_weights: Path,
    external_data: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, files = served
    old, new = files["zip"], other_weights
    out = tmp_path / "r18.onnx"
    first = _export(old, out)
    assert first.data_path is not None
    old_graph, old_data = out.read_bytes(), first.data_path.read_bytes()

    # Killed after the first publish step (the data file moved in, the graph not yet).
    real_replace = os.replace
    moves: list[str] = []

    def killed_after_first(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src).parent.name.startswith(".r18.onnx~"):  # a move out of the staging folder
            moves.append(Path(dst).name)
            if len(moves) == 2:
                raise KeyboardInterrupt  # what a kill looks like from here: nothing after runs
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        _export(new, out)
    monkeypatch.setattr(os, "replace", real_replace)
    assert moves[1] == "r18.onnx" and moves[0].endswith(".data")  # the data went first
    locations, got = _on_disk(out)
    assert out.read_bytes() == old_graph and locations == {first.data_path.name}
    assert first.data_path.read_bytes() == old_data and _same(got, old)  # entirely old
    assert not _same(got, new)

    # Killed after the graph's rename, before the old data is removed: entirely new.
    monkeypatch.setattr(
        "wsl_images.export._export.remove_stale_data", lambda target: _raise(KeyboardInterrupt())
    )
    with pytest.raises(KeyboardInterrupt):
        _export(new, out)
    monkeypatch.undo()
    monkeypatch.setattr("wsl_images.export._export._EXTERNAL_DATA_BYTES", 0)
    locations, got = _on_disk(out)
    assert first.data_path.name not in locations and _same(got, new)

    # The next export clears what the kills left: one graph, the one data file it reads.
    last = _export(old, out)
    locations, got = _on_disk(out)
    assert last.data_path is not None and locations == {last.data_path.name} and _same(got, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r18.onnx", last.data_path.name])


def _raise(exc: BaseException) -> None:
    raise exc
