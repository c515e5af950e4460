"""features_only / out_indices: shapes and feature_info for every model, weights as loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from server import FileServer

import wsl_images
from wsl_images import FeatureExtractor, InvalidInputError, get_model, list_models
from wsl_images.zoo import get_weights

Served = tuple[FileServer, dict[str, Path]]
STRIDES = [2, 4, 8, 16, 32]
CHANNELS = {"BasicBlock": [64, 64, 128, 256, 512], "Bottleneck": [64, 256, 512, 1024, 2048]}


@pytest.mark.parametrize("name", list_models())
def test_every_model_features_on_meta(name: str) -> None:
    """Built through the public entrypoint on the meta device: no memory, no download."""
    entry = getattr(wsl_images, name)
    model = entry(pretrained=False, device="meta", features_only=True, out_indices=(0, 1, 2, 3, 4))
    assert isinstance(model, FeatureExtractor)
    channels = CHANNELS[get_weights(name).arch.block]
    info = model.feature_info
    assert info.channels() == channels
    assert info.reduction() == STRIDES
    assert info.module_name() == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert [s.index for s in info] == [0, 1, 2, 3, 4]
    outs = model(torch.empty(2, 3, 224, 160, device="meta"))
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [
        (2, c, 224 // s, 160 // s) for c, s in zip(channels, STRIDES, strict=True)
    ]


def test_default_indices_order_and_negative_indices() -> None:
    model = get_model("resnet50_swsl", pretrained=False, device="meta", features_only=True)
    assert model.feature_info.reduction() == [4, 8, 16, 32]  # default (1, 2, 3, 4)
    picked = get_model(
        "resnet50_swsl", pretrained=False, device="meta", features_only=True, out_indices=(-1, 2)
    )
    assert picked.feature_info.channels() == [2048, 512]  # in the order asked for
    outs = picked(torch.empty(1, 3, 64, 64, device="meta"))
    assert [o.shape[1] for o in outs] == [2048, 512]
    assert not any(k.startswith("body.fc") for k in picked.state_dict())


def test_dilation_changes_reported_strides() -> None:
    model = get_model(
        "resnet50_ssl",
        pretrained=False,
        device="meta",
        features_only=True,
        replace_stride_with_dilation=[False, True, True],
    )
    assert model.feature_info.reduction() == [4, 8, 8, 8]
    outs = model(torch.empty(1, 3, 64, 64, device="meta"))
    assert [o.shape[-1] for o in outs] == [16, 8, 8, 8]


def test_pretrained_features_are_the_resnet_stages(
    served: Served, state18: dict[str, torch.Tensor]
) -> None:
    _, files = served
    model = get_model(
        "resnet18_ssl", checkpoint_path=files["zip"], features_only=True, out_indices=(0, 1, 4)
    ).eval()
    ref = torchvision.models.resnet18()
    ref.load_state_dict(state18)
    ref.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stem = ref.relu(ref.bn1(ref.conv1(x)))
        layer1 = ref.layer1(ref.maxpool(stem))
        layer4 = ref.layer4(ref.layer3(ref.layer2(layer1)))
        outs = model(x)
    for got, want in zip(outs, [stem, layer1, layer4], strict=True):
        torch.testing.assert_close(got, want)
    assert model.training is False  # eval() reaches the traced graph


@pytest.mark.parametrize("bad", [(5,), (1, 1), (), (-6,), (1.0,), "12"])
def test_bad_out_indices_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInputError, match=r"out_indices .* is not valid.*0 \(stem"):
        get_model("resnet18_ssl", pretrained=False, features_only=True, out_indices=bad)


def test_out_indices_without_features_only() -> None:
    with pytest.raises(InvalidInputError, match=r"out_indices=\(1, 2\) needs features_only=True"):
        get_model("resnet18_ssl", pretrained=False, out_indices=(1, 2))
