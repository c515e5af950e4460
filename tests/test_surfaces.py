"""Everything generated from the registry agrees with it: hubconf, docstrings, CLI, README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import wsl_images
from wsl_images import get_weights, list_models
from wsl_images import zoo as docs
from wsl_images.cli._models import listing

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub_from_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch.hub.list/help (which take a GitHub repo) read this checkout instead."""
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *a, **k: str(REPO))


def test_hub_list_shows_exactly_the_16_models(hub_from_checkout: None) -> None:
    assert torch.hub.list("owner/wsl-images") == list_models()


def test_hub_help_is_generated_from_registry(hub_from_checkout: None) -> None:
    for name in list_models():
        w = get_weights(name)
        text = torch.hub.help("owner/wsl-images", name)
        assert text == docs.docstring(w)
        for fact in (
            w.arch.title,
            w.paper,
            f"{w.num_params:,}",
            f"GFLOPs (224x224): {w.gflops:g}",
            f"{w.top1:.1f}/{w.top5:.1f} published",
            f"{w.top1_remeasured:.3f}/{w.top5_remeasured:.3f} re-measured",
            w.filename,
            "CC-BY-NC 4.0",
            "non-commercial",
        ):
            assert fact in text, (name, fact)
        assert ("Known issue" in text) == (w.known_issue is not None)
    assert "bytes" in torch.hub.help("owner/wsl-images", "resnext101_32x48d_wsl")
    assert "3,317,136,976" in torch.hub.help("owner/wsl-images", "resnext101_32x48d_wsl")


def test_package_exports_the_entrypoints() -> None:
    for name in list_models():
        fn = getattr(wsl_images, name)
        assert fn.__name__ == name and fn.__doc__ == docs.docstring(get_weights(name))
    assert wsl_images.__all__ == sorted(wsl_images.__all__, key=lambda n: (n[0].islower(), n))


def test_cli_listing_has_every_model() -> None:
    rows = listing()[1:]
    assert [row.split()[0] for row in rows] == list_models()
    for row in rows:
        name, params = row.split()[:2]
        assert params == f"{get_weights(name).num_params:,}"


def test_readme_model_table_is_current() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert docs.update_readme(text) == text, "run: python tools/update_readme.py"
    for name in list_models():
        assert f"| `{name}` |" in text


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.DOTALL)
    commands = [line for line in blocks[0].splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2, commands
    assert commands[1] in (REPO / ".ci" / "run").read_text(encoding="utf-8")
