"""A checkpoint without a model name: its architecture told by its shapes, said and recorded;
a checkpoint that fits nothing, or not the model named, gets a message that says what to do."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from checkpoints import random_state_dict

import wsl_images.checkpoints
from wsl_images import CheckpointError, Classifier, get_model
from wsl_images.cli import main
from wsl_images.models import build_model
from wsl_images.zoo import (
    DEFAULT_MODEL,
    architecture_of,
    get_weights,
    list_models,
    meta_skeleton,
    models_for,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "images" / "chelsea.jpg"
ARCHS = sorted({get_weights(n).arch for n in list_models()}, key=lambda a: a.title)


def _shapes(arch: object, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    with meta_skeleton():
        model = build_model(arch, num_classes=num_classes)  # type: ignore[arg-type]
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_there_are_eight_architectures() -> None:
    assert len(ARCHS) == 8


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.title)
@pytest.mark.parametrize("num_classes", [1000, 2])
def test_each_architecture_is_told_by_its_shapes(arch: object, num_classes: int) -> None:
    shapes = _shapes(arch, num_classes)
    assert architecture_of(shapes) == arch
    others = [a for a in ARCHS if architecture_of(_shapes(a)) == arch]
    assert others == [arch]  # exactly one of the eight fits
    names = models_for(arch)  # type: ignore[arg-type]
    assert names and all(get_weights(n).arch == arch for n in names)
    headless = {k: v for k, v in shapes.items() if not k.startswith("fc.")}
    assert architecture_of(headless) == arch


def test_shapes_that_fit_nothing() -> None:
    assert architecture_of({}) is None
    assert architecture_of({"conv1.weight": (64, 3, 7, 7)}) is None
    shapes = _shapes(ARCHS[0])
    shapes["fc.weight"] = (1000, 1024)  # fc's input is not the backbone's width
    assert architecture_of(shapes) is None


def test_the_default_model_is_preferred_among_its_architecture() -> None:
    assert models_for(get_weights(DEFAULT_MODEL).arch)[0] == DEFAULT_MODEL
    assert models_for(get_weights("resnet18_ssl").arch) == ["resnet18_swsl", "resnet18_ssl"]


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("r18") / "weights.pth"
    torch.save(random_state_dict("resnet18_ssl", seed=3), path)
    return path


def test_classify_without_model_infers_says_and_records_it(
    resnet18_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[Path] = []
    real = wsl_images.checkpoints.read_checkpoint

    def counted(path: Path, *, mmap: bool = False) -> wsl_images.checkpoints.Checkpoint:
        reads.append(path)
        return real(path, mmap=mmap)

    monkeypatch.setattr(wsl_images.checkpoints, "read_checkpoint", counted)
    out = tmp_path / "run"
    args = ["classify", "--checkpoint", str(resnet18_file), "--workers", "0", "--no-progress"]
    with caplog.at_level(logging.INFO, logger="wsl_images.models"):
        assert main([*args, "--output-dir", str(out), str(SAMPLE)]) == 0
    assert reads == [resnet18_file]  # read once: the shapes were looked at, nothing re-read
    said = [r.getMessage() for r in caplog.records if "no model name given" in r.getMessage()]
    assert len(said) == 1
    assert "its shapes are those of ResNet-18: built as resnet18_swsl" in said[0]
    assert json.loads((out / "run.json").read_text())["model"] == "resnet18_swsl"


def test_classifier_without_a_name_infers_from_the_checkpoint(resnet18_file: Path) -> None:
    clf = Classifier(checkpoint_path=resnet18_file, workers=0)
    assert clf.name == "resnet18_swsl" and clf.num_classes == 1000
    state = random_state_dict("resnet18_ssl", seed=3)
    assert torch.equal(clf.model.fc.weight.cpu(), state["fc.weight"])


def test_a_checkpoint_that_fits_nothing_names_the_model_tried_and_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    assert main(["classify", "--checkpoint", str(path), str(SAMPLE)]) == 1
    err = capsys.readouterr().err
    assert f"does not fit the default model '{DEFAULT_MODEL}' (ResNeXt-50 32x4d), tried" in err
    assert "no model name was given" in err and "fit none of the zoo's architectures" in err
    assert "--model NAME" in err


def test_a_wrong_model_name_is_told_the_one_that_fits(resnet18_file: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        get_model("resnet50_swsl", checkpoint_path=resnet18_file)
    text = str(info.value)
    assert "does not fit model 'resnet50_swsl' (ResNet-50, 1000 classes)" in text
    assert "Its shapes are those of ResNet-18 (resnet18_swsl, resnet18_ssl)" in text
    assert "--model resnet18_swsl" in text


def test_a_fine_tuned_head_names_num_classes(tmp_path: Path) -> None:
    state = random_state_dict("resnet18_ssl")
    state["fc.weight"], state["fc.bias"] = torch.zeros(2, 512), torch.zeros(2)
    path = tmp_path / "ft.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"Its fc has 2 outputs: pass num_classes=2"):
        get_model("resnet18_ssl", checkpoint_path=path)
