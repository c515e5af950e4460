"""Devices: one rule for get_model, Classifier, evaluate and the CLI; a missing GPU is named."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from wsl_images import Classifier, InvalidInputError, get_model
from wsl_images.zoo import _devices as devices
from wsl_images.zoo import autocast_dtype, available_devices, resolve_device

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
    match = r"'mps' was requested, but (MPS \(Apple GPU\)|this torch .* without MPS support)"
    with pytest.raises(InvalidInputError, match=match):
        get_model("resnet18_ssl", pretrained=False, device="mps")


def test_unknown_and_usable_devices() -> None:
    with pytest.raises(InvalidInputError, match=r"Unknown device 'gpu': use auto, cpu, cuda"):
        get_model("resnet18_ssl", pretrained=False, device="gpu")
    model = get_model("resnet18_ssl", pretrained=False, device="meta")  # not checked: no data
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert resolve_device("cpu") == torch.device("cpu")


def _simulate(monkeypatch: pytest.MonkeyPatch, *, cuda: bool, mps: bool) -> None:
    """A machine with (or without) CUDA and MPS, as torch reports them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_is_cuda_else_mps_else_cpu_everywhere(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    from wsl_images.distributed import Context
    from wsl_images.zoo import ModelOptions

    _simulate(monkeypatch, cuda=cuda, mps=mps)
    want = torch.device(expected)
    assert resolve_device(None) == resolve_device("auto") == want
    assert Context().device("auto") == want  # Classifier, evaluate and the CLI's --device auto
    options = ModelOptions.checked(  # get_model(device="auto")
        features_only=False, out_indices=None, in_chans=3, dtype=None, device="auto"
    )
    assert options.device == want
    assert ("mps" in available_devices()) is mps


def test_a_missing_mps_says_whether_torch_or_the_machine_lacks_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _simulate(monkeypatch, cuda=False, mps=False)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)  # a Mac build, Intel Mac
    with pytest.raises(InvalidInputError, match=r"MPS \(Apple GPU\) is not available on this "):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: False)  # a Linux/Windows build
    with pytest.raises(InvalidInputError, match=r"was built without MPS support.*Available here"):
        resolve_device("mps")


def _simulate_mps_autocast(monkeypatch: pytest.MonkeyPatch, *, macos: int | None) -> None:
    """torch's MPS autocast (``macos``: the macOS major version; None: a torch without it)."""
    if macos is None:
        monkeypatch.delattr(torch.amp, "is_autocast_available", raising=False)
        return
    real = getattr(torch.amp, "is_autocast_available", lambda kind: kind in ("cpu", "cuda"))
    monkeypatch.setattr(
        torch.amp, "is_autocast_available", lambda kind: kind == "mps" or real(kind), raising=False
    )
    monkeypatch.setattr(
        torch.backends.mps, "is_macos_or_newer", lambda major, minor: macos >= major, raising=False
    )


@pytest.mark.parametrize(
    ("macos", "requested", "expected"),
    [
        (14, torch.bfloat16, torch.bfloat16),
        (13, torch.bfloat16, torch.float16),  # MPS computes in bfloat16 from macOS 14
        (13, torch.float16, torch.float16),
        (13, torch.float32, None),
        (13, None, None),
    ],
)
def test_autocast_on_mps_is_float16_where_bfloat16_is_missing(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    macos: int,
    requested: torch.dtype | None,
    expected: torch.dtype | None,
) -> None:
    _simulate_mps_autocast(monkeypatch, macos=macos)
    with caplog.at_level("WARNING", logger="wsl_images.zoo._devices"):
        assert autocast_dtype(requested, torch.device("mps")) == expected
    fell_back = requested == torch.bfloat16 and expected == torch.float16
    assert ("autocasting to float16 instead" in caplog.text) is fell_back


def test_autocast_where_torch_cannot_autocast_on_mps_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _simulate_mps_autocast(monkeypatch, macos=None)  # torch without MPS autocast (2.1 ...)
    with pytest.raises(InvalidInputError, match=r"Autocast to float16 on 'mps' is not supported "):
        autocast_dtype(torch.float16, torch.device("mps"))
    assert autocast_dtype(None, torch.device("mps")) is None  # float32 needs no autocast
    assert autocast_dtype(torch.bfloat16, torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_autocast_on_cuda_follows_native_bfloat16_support(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype
) -> None:
    asked: list[object] = []

    def supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    assert autocast_dtype(torch.bfloat16, torch.device("cuda", 0)) == expected
    assert asked == [False]  # emulated bfloat16 (pre-Ampere GPUs) is slow: float16 there
    assert autocast_dtype(torch.float16, torch.device("cuda", 0)) == torch.float16


def test_classifier_autocasts_by_the_device_rule(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, state18: dict[str, torch.Tensor]
) -> None:
    checkpoint = tmp_path / "r18.pth"
    torch.save(state18, checkpoint)
    monkeypatch.setattr(devices, "_computes_bfloat16", lambda device: False)
    clf = Classifier("resnet18_ssl", checkpoint_path=checkpoint, autocast="bfloat16", workers=0)
    assert clf.autocast_dtype == torch.float16
    assert Classifier("resnet18_ssl", checkpoint_path=checkpoint, workers=0).autocast_dtype is None
