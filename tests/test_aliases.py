"""Aliases: timm's names and the legacy names of timm and older hubs, each to the right model."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from server import FileServer

import wsl_images
from wsl_images import Classifier, UnknownModelError, get_model, get_weights, list_models
from wsl_images.cli import main

Served = tuple[FileServer, dict[str, Path]]

# Written independently of the registry, from timm/models/resnet.py (huggingface/
# pytorch-image-models): its pretrained-config names and register_model_deprecations().
_SSL_ARCHS = (
    "resnet18", "resnet50", "resnext50_32x4d", "resnext101_32x4d", "resnext101_32x8d",
    "resnext101_32x16d",
)  # fmt: skip
TIMM = {
    "resnext101_32x8d_wsl": "resnext101_32x8d.fb_wsl_ig1b_ft_in1k",
    "resnext101_32x16d_wsl": "resnext101_32x16d.fb_wsl_ig1b_ft_in1k",
    "resnext101_32x32d_wsl": "resnext101_32x32d.fb_wsl_ig1b_ft_in1k",
    "resnext101_32x48d_wsl": None,  # a config without a model function in timm
    **{f"{arch}_ssl": f"{arch}.fb_ssl_yfcc100m_ft_in1k" for arch in _SSL_ARCHS},
    **{f"{arch}_swsl": f"{arch}.fb_swsl_ig1b_ft_in1k" for arch in _SSL_ARCHS},
}
LEGACY = {
    # timm sends ig_resnext101_32x16d/32x32d/32x48d to the 32x8d weights; here each is itself.
    "ig_resnext101_32x8d": "resnext101_32x8d_wsl",
    "ig_resnext101_32x16d": "resnext101_32x16d_wsl",
    "ig_resnext101_32x32d": "resnext101_32x32d_wsl",
    "ig_resnext101_32x48d": "resnext101_32x48d_wsl",
    "ssl_resnet18": "resnet18_ssl",
    "ssl_resnext101_32x16d": "resnext101_32x16d_ssl",
    "swsl_resnet50": "resnet50_swsl",
    "swsl_resnext50_32x4d": "resnext50_32x4d_swsl",
    "swsl_resnext101_32x16d": "resnext101_32x16d_swsl",
}


def test_every_alias_resolves_to_its_row() -> None:
    for name in list_models():
        weights = get_weights(name)
        assert weights.aliases, name
        for alias in weights.aliases:
            assert get_weights(alias) is weights, alias


def test_no_alias_is_shared_or_a_model_name() -> None:
    aliases = [a for name in list_models() for a in get_weights(name).aliases]
    shared = [a for a, n in Counter(aliases).items() if n > 1]
    assert shared == []
    assert set(aliases).isdisjoint(list_models())


def test_timm_names_and_meta() -> None:
    assert {name: get_weights(name).meta["timm_name"] for name in list_models()} == TIMM
    timm_names = [t for t in TIMM.values() if t is not None]
    assert len(timm_names) == 15
    for name, timm_name in TIMM.items():
        if timm_name is not None:
            assert get_weights(timm_name).name == name
    assert "ig_resnext101_32x48d" in get_weights("resnext101_32x48d_wsl").meta["aliases"]


def test_legacy_names_build_the_architecture_they_name() -> None:
    """Parameter counts on the meta device: the 32x48d name builds 828M parameters, not 88M."""
    for alias, name in LEGACY.items():
        model = get_model(alias, pretrained=False, device="meta")
        count = sum(p.numel() for p in model.parameters())
        assert get_weights(alias).name == name
        assert count == get_weights(name).num_params, alias
    assert get_weights("ig_resnext101_32x48d").num_params == 828_411_176


def test_alias_is_logged_with_the_model_it_names(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wsl_images.zoo._registry"):
        get_weights("ig_resnext101_32x48d")
        get_weights("resnext101_32x48d_wsl")  # a model name: nothing to say
    assert [r.getMessage() for r in caplog.records] == [
        "'ig_resnext101_32x48d' is an alias of 'resnext101_32x48d_wsl' (ResNeXt-101 32x48d, WSL)"
    ]


def test_a_name_close_to_an_alias_suggests_the_model_it_names() -> None:
    # Suggestions are canonical names: the alias swsl_resnext50_32x4d leads to its model.
    with pytest.raises(UnknownModelError, match=r"Did you mean 'resnext50_32x4d_swsl'\?"):
        get_weights("swsl_resnext50_32x4")


def test_get_model_and_classifier_take_aliases(served: Served) -> None:
    _, files = served
    model = get_model("ssl_resnet18", checkpoint_path=files["zip"])
    clf = Classifier(
        "resnet18.fb_ssl_yfcc100m_ft_in1k", checkpoint_path=files["zip"], workers=0, device="cpu"
    )
    assert clf.name == "resnet18_ssl"
    for a, b in zip(model.state_dict().values(), clf.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_cache_and_cli_take_aliases(
    served: Served,
    register_file: Callable[[str, str], None],
    isolated_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['zip'].name}")
    assert wsl_images.download("ssl_resnet18", progress=False) == isolated_cache / files["zip"].name
    assert main(["download", "resnet18.fb_ssl_yfcc100m_ft_in1k", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(isolated_cache / files["zip"].name)
    assert main(["info", "swsl_resnext101_32x16d"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "resnext101_32x16d_swsl"
    assert "Aliases: resnext101_32x16d.fb_swsl_ig1b_ft_in1k, swsl_resnext101_32x16d" in out
    assert "timm name: resnext101_32x16d.fb_swsl_ig1b_ft_in1k" in out
