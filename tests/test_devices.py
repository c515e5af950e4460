"""Devices: one rule for get_model, Classifier, evaluate and the CLI; a missing GPU is named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsl_images import Classifier, InvalidInputError, get_model
from wsl_images.zoo import available_devices, resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
_MISSING_CUDA = r"(built without CUDA support|CUDA is not available \(no NVIDIA GPU or driver)"


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_get_model_names_a_missing_gpu_and_what_is_available(
    device: str | torch.device, tmp_path: Path, state18: dict[str, torch.Tensor]
) -> None:
    checkpoint = tmp_path / "r18.pth"
    torch.save(state18, checkpoint)
    match = rf"Device '{device}' was requested, but .*{_MISSING_CUDA}.*Available here: cpu"
    for kwargs in ({"pretrained": False}, {"checkpoint_path": checkpoint}):
        with pytest.raises(InvalidInputError, match=match):
            get_model("resnet18_ssl", device=device, **kwargs)  # type: ignore[arg-type]


@no_cuda
def test_classifier_and_the_library_share_the_rule() -> None:
    with pytest.raises(InvalidInputError, match=rf"'cuda' was requested, but .*{_MISSING_CUDA}"):
        Classifier("resnet18_ssl", device="cuda")
    assert available_devices()[0] == "cpu"
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_a_missing_mps_device_is_named() -> None:
    with pytest.raises(InvalidInputError, match=r"'mps' was requested, but MPS \(Apple GPU\)"):
        get_model("resnet18_ssl", pretrained=False, device="mps")


def test_unknown_and_usable_devices() -> None:
    with pytest.raises(InvalidInputError, match=r"Unknown device 'gpu': use auto, cpu, cuda"):
        get_model("resnet18_ssl", pretrained=False, device="gpu")
    model = get_model("resnet18_ssl", pretrained=False, device="meta")  # not checked: no data
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert resolve_device("cpu") == torch.device("cpu")
