"""get_model and the 16 entrypoints: explicit keywords, docs from the same list, typed returns."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import wsl_images
from wsl_images import get_model
from wsl_images import zoo as docs
from wsl_images.models import entrypoints

REPO = Path(__file__).resolve().parents[1]


def _keywords(fn: Callable[..., object]) -> list[inspect.Parameter]:
    params = list(inspect.signature(fn).parameters.values())
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD, "only **kwargs for torchvision"
    return [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


@pytest.mark.parametrize("fn", [get_model, *entrypoints().values()], ids=lambda f: f.__name__)
def test_signature_is_the_documented_keyword_list(fn: Callable[..., object]) -> None:
    params = _keywords(fn)
    got = [(p.name, p.annotation, repr(p.default)) for p in params]
    assert got == [(k.name, k.annotation, k.default) for k in docs.KEYWORDS]
    positional = [p.name for p in inspect.signature(fn).parameters.values() if p not in params]
    assert positional == (["name", "kwargs"] if fn is get_model else ["kwargs"])


def test_docstrings_list_every_keyword() -> None:
    names = [k.name for k in docs.KEYWORDS]
    assert names[:5] == ["pretrained", "progress", "num_classes", "checkpoint_path", "check_hash"]
    assert set(names[5:]) == {
        "mmap", "cache_dir", "features_only", "out_indices", "in_chans", "dtype", "device"
    }  # fmt: skip
    for name, fn in entrypoints().items():
        assert fn is getattr(wsl_images, name)
        text = fn.__doc__ or ""
        flat = " ".join(text.split())  # undo the wrapping
        for kw in docs.KEYWORDS:
            assert f"{kw.name} ({kw.annotation}, default {kw.default}): " in flat, (name, kw)
        assert "**kwargs: passed to torchvision.models.ResNet" in text
        assert "FeatureExtractor" in text.split("Returns:")[1]


def test_return_types_follow_features_only(tmp_path: Path) -> None:
    """mypy on user code: ResNet by default, FeatureExtractor with features_only=True.

    (torchvision ships no type information, so mypy sees ResNet as Any: the lines marked
    ``# E`` must fail, which shows the default is not typed as a FeatureExtractor.)
    """
    snippet = tmp_path / "user_code.py"
    snippet.write_text(
        """from typing_extensions import assert_type
from torchvision.models import ResNet
from wsl_images import FeatureExtractor, get_model
from wsl_images.models import entrypoints

assert_type(get_model("resnet50_swsl"), ResNet)
assert_type(get_model("resnet50_swsl"), FeatureExtractor)  # E
assert_type(get_model("resnet50_swsl", features_only=True, out_indices=(4,)), FeatureExtractor)
flag: bool = bool(len("x"))
assert_type(get_model("resnet50_swsl", features_only=flag), ResNet | FeatureExtractor)
entry = entrypoints()["resnet50_swsl"]
assert_type(entry(pretrained=False, cache_dir="/tmp/c"), ResNet)
assert_type(entry(pretrained=False), FeatureExtractor)  # E
assert_type(entry(features_only=True, in_chans=1), FeatureExtractor)
get_model("resnet50_swsl", out_indices=(1, 2))  # E: out_indices needs features_only=True
get_model("resnet50_swsl", dtype="float16")  # E: a torch.dtype
"""
    )
    expected = [i for i, line in enumerate(snippet.read_text().splitlines(), 1) if "# E" in line]
    mypy = Path(sys.executable).with_name("mypy")
    proc = subprocess.run(
        [str(mypy), "--strict", "--ignore-missing-imports", "--no-error-summary", str(snippet)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert [int(line.split(":")[1]) for line in errors] == expected, proc.stdout
