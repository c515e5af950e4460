"""Names as people type them: suggestions, case, and ``wsl-images list PATTERN``."""

from __future__ import annotations

import logging

import pytest

from wsl_images.cli import main
from wsl_images.errors import UnknownModelError
from wsl_images.zoo import get_weights, list_models, suggest_names


def _suggested(name: str) -> str:
    with pytest.raises(UnknownModelError) as info:
        get_weights(name)
    return str(info.value)


def test_a_prefix_suggests_the_models_it_starts() -> None:
    # ResNeXt-50 models, canonical names only: no resnet50 look-alikes, no legacy aliases.
    assert suggest_names("resnext50") == ["resnext50_32x4d_ssl", "resnext50_32x4d_swsl"]
    message = _suggested("resnext50")
    assert "Did you mean 'resnext50_32x4d_ssl', 'resnext50_32x4d_swsl'?" in message
    assert "ssl_resnet50" not in message and "swsl_resnet50" not in message


def test_suggestions_are_canonical_names_ranked_by_how_they_match() -> None:
    assert suggest_names("resnet5") == ["resnet50_ssl", "resnet50_swsl"]  # prefix
    assert suggest_names("32x48") == ["resnext101_32x48d_wsl"]  # substring
    assert suggest_names("ig_resnext101_32x8") == ["resnext101_32x8d_wsl"]  # an alias's prefix
    assert suggest_names("resnet50_wsl")[:2] == ["resnet50_swsl", "resnet50_ssl"]  # similar
    assert set(suggest_names("ResNeXt101_32x16")) == {
        "resnext101_32x16d_ssl", "resnext101_32x16d_swsl", "resnext101_32x16d_wsl"
    }  # fmt: skip
    assert suggest_names("qqqq") == []
    every = {s for n in ("resnet", "resnext", "wsl", "32x") for s in suggest_names(n)}
    assert every <= set(list_models())


def test_names_resolve_whatever_their_case(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wsl_images.zoo._registry"):
        assert get_weights("RESNET50_SWSL").name == "resnet50_swsl"
        assert get_weights("IG_ResNeXt101_32x48d").name == "resnext101_32x48d_wsl"
        assert get_weights(" Resnet18_SSL ").name == "resnet18_ssl"
    assert "'RESNET50_SWSL' is taken as 'resnet50_swsl'" in caplog.text


def test_the_cli_takes_names_in_any_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "RESNET50_SWSL"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "resnet50_swsl"


def _listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["list", *args]) == 0
    return [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:] if line[:1] != "!"]


def test_list_takes_a_word_as_a_substring_of_names_and_aliases(
    capsys: pytest.CaptureFixture[str],
) -> None:
    swsl = [n for n in list_models() if n.endswith("_swsl")]
    assert _listed(capsys, "swsl") == swsl
    assert _listed(capsys, "SWSL") == swsl
    assert _listed(capsys, "resnet50") == ["resnet50_ssl", "resnet50_swsl"]
    assert _listed(capsys, "ig_") == [n for n in list_models() if n.endswith("_wsl")]  # aliases
    assert _listed(capsys, "*_swsl") == swsl  # a glob is list_models()' fnmatch pattern
    assert _listed(capsys, "resnet*") == list_models("resnet*")
    assert list_models("swsl") == []  # the API keeps its fnmatch contract


def test_list_says_when_nothing_matches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "resnet51"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no model matches 'resnet51'. Close names: resnet18_ssl" in captured.err


def test_list_marks_the_known_issue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "32x16d"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("resnext101_32x16d_swsl "))
    assert " 84.8! " in row
    assert [line for line in lines if "84.8!" in line] == [row]  # no other row is marked
    assert lines[-1].startswith("! resnext101_32x16d_swsl: known issue: the released file")
    assert "(wsl-images info resnext101_32x16d_swsl)" in lines[-1]
    assert main(["list", "resnet50"]) == 0
    assert "!" not in capsys.readouterr().out
