"""in_chans (timm's conv1 rule) and dtype/device loading (no float32 copy held)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from checkpoints import random_state_dict
from server import FileServer

from wsl_images import InvalidInputError, get_model

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]


def test_in_chans_1_sums_rgb_filters(served: Served, state18: dict[str, torch.Tensor]) -> None:
    _, files = served
    model = get_model("resnet18_ssl", checkpoint_path=files["zip"], in_chans=1).eval()
    w = state18["conv1.weight"]
    assert torch.equal(model.conv1.weight, w.sum(dim=1, keepdim=True))  # timm's rule, exactly
    torch.testing.assert_close(model.conv1.weight, w[:, 0:1] + w[:, 1:2] + w[:, 2:3])
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    for key, value in state18.items():  # nothing else touched
        if key != "conv1.weight":
            assert torch.equal(model.state_dict()[key], value), key
    # The point of the rule: a grey image gives what the same image as RGB gave.
    rgb = get_model("resnet18_ssl", checkpoint_path=files["zip"]).eval()
    grey = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(grey), rgb(grey.expand(-1, 3, -1, -1)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [4, 6])
def test_in_chans_n_repeats_and_rescales(
    n: int, served: Served, state18: dict[str, torch.Tensor]
) -> None:
    _, files = served
    model = get_model("resnet18_ssl", checkpoint_path=files["legacy"], in_chans=n).eval()
    w = state18["conv1.weight"]
    channels = [w[:, i % 3 : i % 3 + 1] for i in range(n)]  # R, G, B, R, ...
    expected = torch.cat(channels, dim=1) * (3 / n)
    assert model.conv1.weight.shape == (64, n, 7, 7)
    assert torch.equal(model.conv1.weight, expected)
    if n % 3 == 0:  # the RGB image repeated n / 3 times gives what the RGB image gave
        rgb = get_model("resnet18_ssl", checkpoint_path=files["legacy"]).eval()
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(model(x.repeat(1, n // 3, 1, 1)), rgb(x), atol=1e-4, rtol=0)


def test_in_chans_without_weights_is_a_fresh_conv() -> None:
    model = get_model("resnext50_32x4d_ssl", pretrained=False, in_chans=4)
    assert model.conv1.weight.shape == (64, 4, 7, 7)
    assert model(torch.randn(1, 4, 64, 64)).shape == (1, 1000)
    # Initialised like torchvision's other convs: Kaiming normal, fan_out = 64 * 7 * 7.
    expected_std = (2 / (64 * 7 * 7)) ** 0.5
    assert model.conv1.weight.std().item() == pytest.approx(expected_std, rel=0.05)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "3"])
def test_bad_in_chans(bad: object) -> None:
    with pytest.raises(InvalidInputError, match=r"in_chans must be a positive integer.*got"):
        get_model("resnet18_ssl", pretrained=False, in_chans=bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_loads_every_float_tensor_in_that_dtype(
    dtype: torch.dtype, served: Served, state18: dict[str, torch.Tensor]
) -> None:
    _, files = served
    model = get_model("resnet18_ssl", checkpoint_path=files["zip"], dtype=dtype, device="cpu")
    for key, value in model.state_dict().items():
        want = state18[key]
        if want.is_floating_point():
            assert value.dtype == dtype, key
            assert torch.equal(value, want.to(dtype)), key
        else:
            assert value.dtype == want.dtype and torch.equal(value, want), key
    if not _cpu_convolves(dtype):  # torch 2.1 (the floor) has no float16 conv on the CPU
        pytest.skip(f"this torch cannot run a {dtype} convolution on the CPU")
    logits = model.eval()(torch.randn(1, 3, 64, 64, dtype=dtype))
    assert logits.dtype == dtype


def _cpu_convolves(dtype: torch.dtype) -> bool:
    one = torch.ones(1, 1, 1, 1, dtype=dtype)
    try:
        torch.nn.functional.conv2d(one, one)
    except RuntimeError:
        return False
    return True


def test_dtype_with_new_head_in_chans_and_features(served: Served) -> None:
    _, files = served
    model = get_model(
        "resnet18_ssl", checkpoint_path=files["legacy"], num_classes=3, in_chans=1,
        dtype=torch.bfloat16,
    )  # fmt: skip
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.fc.out_features == 3
    feats = get_model(
        "resnet18_ssl", pretrained=False, features_only=True, dtype=torch.float16, device="meta"
    )
    assert {p.dtype for p in feats.parameters()} == {torch.float16}


@pytest.mark.parametrize("bad", [torch.int8, "float16"])
def test_bad_dtype(bad: object) -> None:
    with pytest.raises(InvalidInputError, match=r"dtype must be a floating torch.dtype.*got"):
        get_model("resnet18_ssl", pretrained=False, dtype=bad)


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures Linux /proc memory counters"
)
def test_half_precision_load_holds_no_float32_copy(tmp_path: Path) -> None:
    """Memory of a float16 load of a 100 MB (resnet50) checkpoint, measured in a fresh process.

    The float32 source is memory-mapped: its pages are file-backed and counted in RSS only
    while read. Loading must never add a second, anonymous float32 copy on top (peak), and
    must keep only the float16 weights afterwards (anonymous memory after the load).
    """
    checkpoint = tmp_path / "resnet50.pth"
    torch.save(random_state_dict("resnet50_ssl"), checkpoint)
    probe = REPO / "tests" / "memory_probe.py"
    proc = subprocess.run(
        [sys.executable, str(probe), str(checkpoint), "resnet50_ssl", "float16", "mmap"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    fp32, fp16 = m["fp32_bytes"], m["loaded_bytes"]
    assert m["dtypes"] == ["torch.float16", "torch.int64"]
    assert fp16 * 2 == pytest.approx(fp32, rel=0.01)
    slack = 0.25 * fp32  # allocator and interpreter noise; an extra copy would be 1.0 * fp32
    assert m["anon_after"] < fp16 + slack, m
    assert m["peak"] < fp32 + fp16 + slack, m
