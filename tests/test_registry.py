"""The registry table: values, architectures, metadata, transforms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

import wsl_images
from wsl_images import UnknownModelError, get_weights, list_models
from wsl_images.models import build_model

DESIGN = Path(__file__).resolve().parents[2] / "shared" / "DESIGN.md"

# (block, layers, groups, width) straight from DESIGN.md's table, written independently here.
EXPECTED_ARCH = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], 1, 64),
    "resnet50": (Bottleneck, [3, 4, 6, 3], 1, 64),
    "resnext50_32x4d": (Bottleneck, [3, 4, 6, 3], 32, 4),
    "resnext101_32x4d": (Bottleneck, [3, 4, 23, 3], 32, 4),
    "resnext101_32x8d": (Bottleneck, [3, 4, 23, 3], 32, 8),
    "resnext101_32x16d": (Bottleneck, [3, 4, 23, 3], 32, 16),
    "resnext101_32x32d": (Bottleneck, [3, 4, 23, 3], 32, 32),
    "resnext101_32x48d": (Bottleneck, [3, 4, 23, 3], 32, 48),
}
META_KEYS = {
    "categories",
    "num_params",
    "gflops",
    "file_size",
    "top1",
    "top5",
    "top1_remeasured",
    "top5_remeasured",
    "regime",
    "paper",
    "license",
    "known_issue",
}


def _arch_key(name: str) -> str:
    return name.rsplit("_", 1)[0]


def test_sixteen_models_in_three_regimes() -> None:
    names = list_models()
    assert len(names) == 16
    assert names == sorted(names)
    assert len(list_models("*_wsl")) == 4
    assert len(list_models("*_ssl")) == 6
    assert len(list_models("*_swsl")) == 6
    assert list_models("resnet18*") == ["resnet18_ssl", "resnet18_swsl"]
    assert list_models("nothing*") == []


@pytest.mark.skipif(not DESIGN.is_file(), reason="../shared/DESIGN.md not beside the checkout")
def test_table_matches_design_document() -> None:
    rows = re.findall(
        r"^\| (\w+) \| .+? \| (\S+\.pth) \| ([\d,]+) \| ([\d.]+)/([\d.]+) \| ([\d.]+)/([\d.]+) \|$",
        DESIGN.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert len(rows) == 16
    for name, filename, params, t1, t5, r1, r5 in rows:
        w = get_weights(name)
        assert (w.filename, w.num_params) == (filename, int(params.replace(",", "")))
        assert (w.top1, w.top5) == (float(t1), float(t5))
        assert (w.top1_remeasured, w.top5_remeasured) == (float(r1), float(r5))


def test_params_keys_and_shapes_match_torchvision_for_all_16() -> None:
    mismatches = []
    for name in list_models():
        w = get_weights(name)
        block, layers, groups, width = EXPECTED_ARCH[_arch_key(name)]
        with torch.device("meta"):
            ours = build_model(w.arch)
            ref = ResNet(block, layers, groups=groups, width_per_group=width)
        count = sum(p.numel() for p in ours.parameters())
        if count != w.num_params or count != w.meta["num_params"]:
            mismatches.append(f"{name}: {count} params, table says {w.num_params}")
        ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
        ref_shapes = {k: v.shape for k, v in ref.state_dict().items()}
        if ours_shapes != ref_shapes:
            mismatches.append(f"{name}: state-dict keys/shapes differ from torchvision")
        assert isinstance(ours, torchvision.models.ResNet)
    assert not mismatches, mismatches


def test_torchvision_builders_agree_where_they_exist() -> None:
    builders = {
        "resnet18_ssl": torchvision.models.resnet18,
        "resnet50_swsl": torchvision.models.resnet50,
        "resnext50_32x4d_ssl": torchvision.models.resnext50_32x4d,
        "resnext101_32x8d_wsl": torchvision.models.resnext101_32x8d,
    }
    for name, builder in builders.items():
        with torch.device("meta"):
            ref = builder()
            ours = build_model(get_weights(name).arch)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in ref.state_dict().items()
        }


def test_weights_fields_and_meta() -> None:
    w = get_weights("resnext101_32x48d_wsl")
    assert w.url == "https://download.pytorch.org/models/ig_resnext101_32x48-3e41cc8a.pth"
    assert w.filename == "ig_resnext101_32x48-3e41cc8a.pth"
    assert w.hash_prefix == "3e41cc8a"
    assert w.meta["file_size"] == 3_317_136_976
    assert w.meta["gflops"] == 153
    assert w.meta["regime"] == "wsl"
    assert "1805.00932" in w.meta["paper"]
    assert "CC-BY-NC 4.0" in w.meta["license"]
    for name in list_models():
        meta = get_weights(name).meta
        assert set(meta) >= META_KEYS, name
    ssl = get_weights("resnet50_ssl")
    assert ssl.url.startswith("https://dl.fbaipublicfiles.com/semiweaksupervision/model_files/")
    assert "1905.00546" in ssl.meta["paper"]


def test_known_issue_only_on_swsl_32x16d() -> None:
    flagged = [n for n in list_models() if get_weights(n).known_issue]
    assert flagged == ["resnext101_32x16d_swsl"]
    assert "83.3" in get_weights("resnext101_32x16d_swsl").meta["known_issue"]


def test_categories_come_from_torchvision() -> None:
    cats = get_weights("resnet18_ssl").meta["categories"]
    ref = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert cats == list(ref) and len(cats) == 1000
    assert cats[281] == "tabby"


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(UnknownModelError, match=r"'resnext101_32x8d_wsl'") as info:
        get_weights("resnext101_32x8_wsl")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, wsl_images.WslImagesError)
    with pytest.raises(ValueError, match="wsl-images list"):
        wsl_images.get_model("vgg16")


def test_transforms_accept_pil_and_uint8_tensor() -> None:
    tf = get_weights("resnet50_swsl").transforms()
    img = Image.new("RGB", (500, 375), (255, 0, 0))
    from_pil = tf(img)
    tensor = torch.zeros(3, 375, 500, dtype=torch.uint8)
    tensor[0] = 255
    from_tensor = tf(tensor)
    assert from_pil.shape == from_tensor.shape == (3, 224, 224)
    assert from_pil.dtype == from_tensor.dtype == torch.float32
    expected_red = (1 - 0.485) / 0.229
    assert from_pil[0].mean().item() == pytest.approx(expected_red, abs=1e-3)
    assert torch.allclose(from_pil, from_tensor, atol=1e-3)
