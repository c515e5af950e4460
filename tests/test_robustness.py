"""The robustness figures (timm's ImageNet-V2/R/A/Sketch tables) in the registry and in ``info``."""

from __future__ import annotations

import pytest

from wsl_images import get_weights, list_models
from wsl_images.cli import main
from wsl_images.zoo._registry import _ROBUSTNESS, robustness

SETS = ("imagenet_v2", "imagenet_r", "imagenet_a", "imagenet_sketch")


def test_every_model_and_only_those_has_an_entry() -> None:
    assert sorted(_ROBUSTNESS) == list_models()


def test_figures_are_percentages_with_top1_at_most_top5() -> None:
    bad = []
    for name in list_models():
        for key, pair in vars(robustness(name)).items():
            if pair is not None and not 0 <= pair[0] <= pair[1] <= 100:
                bad.append((name, key, pair))
    assert bad == []


def test_the_48d_file_has_no_row_and_the_others_have_all_four() -> None:
    # timm's tables have no row for resnext101_32x48d: no number is invented for it.
    missing = [(n, k) for n in list_models() for k, v in vars(robustness(n)).items() if v is None]
    assert sorted(missing) == sorted(("resnext101_32x48d_wsl", s) for s in SETS)


def test_meta_and_info_show_them(capsys: pytest.CaptureFixture[str]) -> None:
    meta = get_weights("resnet50_swsl").meta["robustness"]
    assert sorted(meta) == sorted(f"{s}_{k}" for s in SETS for k in ("top1", "top5"))
    assert (meta["imagenet_r_top1"], meta["imagenet_r_top5"]) == (68.287, 83.307)  # timm's row
    assert main(["info", "resnext101_32x48d_wsl"]) == 0
    assert "ImageNet-V2 not measured" in capsys.readouterr().out
    assert main(["info", "resnet18_ssl"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("Robustness"))
    r = robustness("resnet18_ssl")
    assert r.imagenet_v2 is not None
    assert f"ImageNet-V2 {r.imagenet_v2[0]:.3f}/{r.imagenet_v2[1]:.3f}" in line
    assert line.count(", ImageNet-") == 3 and "not measured" not in line
