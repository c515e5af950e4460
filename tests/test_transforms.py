"""Preprocessing is registry data: transforms(), the pipeline and ``info`` are built from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from imagegen import photo
from server import FileServer
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.functional import pil_to_tensor

from wsl_images import Classifier, get_weights
from wsl_images.cli import main
from wsl_images.zoo import Preprocessing, eval_transforms, geometry, normalization
from wsl_images.zoo import _registry as registry

Served = tuple[FileServer, dict[str, Path]]
ODD = Preprocessing(resize=40, crop=32, interpolation="bicubic", mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.fixture
def odd_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """resnet18_ssl with other preprocessing, as a future row could have."""
    row = dataclasses.replace(get_weights("resnet18_ssl"), preprocessing=ODD)
    monkeypatch.setitem(registry._REGISTRY, "resnet18_ssl", row)


def test_the_papers_recipe_is_every_rows() -> None:
    for name in registry.list_models():
        pre = get_weights(name).preprocessing
        assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bilinear")
        assert (pre.mean, pre.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_transforms_follow_the_fields(odd_row: None) -> None:
    image = pil_to_tensor(photo((90, 60)))
    got = get_weights("resnet18_ssl").transforms()(image)
    by_hand = v2.Compose(
        [
            v2.Resize(40, interpolation=InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(32),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5] * 3, std=[0.25] * 3),
        ]
    )(image)
    assert got.shape == (3, 32, 32)
    assert torch.equal(got, by_hand)


def test_geometry_then_normalization_is_the_whole(odd_row: None) -> None:
    image = pil_to_tensor(photo((70, 50), seed=3))
    crop = geometry(ODD)(image)
    assert crop.dtype == torch.uint8 and crop.shape == (3, 32, 32)  # workers send uint8
    assert torch.equal(normalization(ODD)(crop.unsqueeze(0))[0], eval_transforms(ODD)(image))


def test_pipeline_and_info_use_the_fields(
    odd_row: None, served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    clf = Classifier("resnet18_ssl", checkpoint_path=served[1]["zip"], workers=0, device="cpu")
    assert clf.geometry(photo((90, 60))).shape == (3, 32, 32)
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    assert torch.equal(clf.normalize(white), torch.full((1, 3, 32, 32), 2.0))  # (1 - .5) / .25
    assert clf.embed([photo((90, 60))]).shape == (1, 512)
    assert main(["info", "resnet18_ssl"]) == 0
    assert "Input: RGB, resize 40 (bicubic), center crop 32, mean (0.5, 0.5, 0.5)" in (
        capsys.readouterr().out
    )
