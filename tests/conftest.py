"""Shared fixtures: an isolated cache, a loopback weight server, generated checkpoints."""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from checkpoints import random_state_dict, save_hashed
from server import FileServer

from wsl_images.zoo import _registry as registry

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Each run gets a base folder of its own (unless ``--basetemp`` names one).

    pytest's default base folder is shared by every run of one user, and a starting run prunes
    the older ones, so two runs at once on one machine deleted each other's files.
    """
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="wsl-images-tests-")
        config.stash[_OWN_BASETEMP] = Path(config.option.basetemp)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run only where torch sees a CUDA device (``pytest -m gpu`` there)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A passing run removes its own base folder; a failing one keeps it for inspection."""
    own = config.stash.get(_OWN_BASETEMP, None)
    if own is not None and config.stash.get(_PASSED, False):
        shutil.rmtree(own, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_PASSED] = exitstatus == 0


_OWN_BASETEMP = pytest.StashKey[Path]()
_PASSED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache and no mirror/offline settings from the caller."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("WSL_IMAGES_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("WSL_IMAGES_MIRROR", raising=False)
    monkeypatch.delenv("WSL_IMAGES_OFFLINE", raising=False)
    # Network faults are retried quickly in tests (the defaults wait seconds between attempts).
    monkeypatch.setenv("WSL_IMAGES_BACKOFF", "0.01")
    monkeypatch.setenv("WSL_IMAGES_TIMEOUT", "5")
    # Models run on the CPU, as on a machine without an accelerator; test_devices.py simulates
    # the others. (GitHub's macOS runners report an MPS device that cannot allocate.)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    return cache


@pytest.fixture(params=["default", "spawn"])
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test whose DataLoader has workers twice: as workers start by default here, and
    spawned, as on macOS and Windows (a spawned worker imports everything afresh and gets its
    dataset pickled). Where spawn is the default already, the second run is skipped."""
    if request.param == "spawn":
        if multiprocessing.get_start_method() == "spawn":
            pytest.skip("spawn is this platform's default start method: run once already")
        monkeypatch.setenv("WSL_IMAGES_START_METHOD", "spawn")
    return str(request.param)


@pytest.fixture(scope="session")
def state18() -> dict[str, torch.Tensor]:
    """Random resnet18 weights, the same for the whole session."""
    return random_state_dict("resnet18_ssl", seed=0)


@pytest.fixture(scope="session")
def served(
    tmp_path_factory: pytest.TempPathFactory, state18: dict[str, torch.Tensor]
) -> Iterator[tuple[FileServer, dict[str, Path]]]:
    """A loopback server with resnet18 checkpoints in legacy and zip format."""
    root = tmp_path_factory.mktemp("served")
    files = {
        "legacy": save_hashed(state18, root, "semi_supervised_resnet18", legacy=True),
        "zip": save_hashed(state18, root, "semi_supervised_resnet18_zip", legacy=False),
    }
    with FileServer(root) as server:
        yield server, files


@pytest.fixture
def register_file(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], None]:
    """Point a registered model's URL at another file (e.g. one on the loopback server)."""

    def register(name: str, url: str) -> None:
        row = dataclasses.replace(registry.get_weights(name), url=url)
        monkeypatch.setitem(registry._REGISTRY, name, row)

    return register
