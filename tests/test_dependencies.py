"""What works with only some dependencies installed (tests/restricted.py hides the others)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hub_scenarios
from hub_scenarios import HUB_USER, MINIMUM
from restricted import REPO, blocked_modules, run_restricted
from server import FileServer

Served = tuple[FileServer, dict[str, Path]]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TORCH_HOME": str(tmp_path / "th"), "WSL_IMAGES_CACHE": str(tmp_path)}


def _last_json(stdout: str) -> object:
    return json.loads(stdout.strip().splitlines()[-1])


def test_restricted_interpreter_hides_everything_else() -> None:
    assert {"requests", "tqdm", "onnx", "pytest"} <= blocked_modules(MINIMUM)
    assert not {"torch", "torchvision", "numpy", "PIL", "filelock"} & blocked_modules(MINIMUM)
    code = """
import importlib.util, json
try:
    import requests
    outcome = "imported"
except ModuleNotFoundError as exc:
    outcome = str(exc)
import filelock, numpy, PIL, torch, torchvision  # torch's and torchvision's own requirements
print(json.dumps([outcome, importlib.util.find_spec("tqdm") is None]))
"""
    proc = run_restricted(code, distributions=MINIMUM)
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout) == ["No module named 'requests'", True]


def test_hub_load_without_weights_needs_only_torch_and_torchvision(tmp_path: Path) -> None:
    code = f"""
import json, sys, torch
model = torch.hub.load({str(REPO)!r}, "resnet18_swsl", source="local", pretrained=False)
logits = model.eval()(torch.randn(2, 3, 64, 64))
print(json.dumps([type(model).__name__, list(logits.shape)]))
"""
    proc = run_restricted(code, distributions=MINIMUM, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout) == ["ResNet", [2, 1000]]
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing written


def test_package_imports_without_requests_and_tqdm() -> None:
    code = """
import importlib, json, pkgutil, sys, wsl_images
names = [m.name for m in pkgutil.walk_packages(wsl_images.__path__, "wsl_images.")]
for name in names:
    importlib.import_module(name)
wsl_images.get_model, wsl_images.Classifier, wsl_images.export_model, wsl_images.resnet50_ssl
print(json.dumps([len(names), [m for m in ("requests", "tqdm") if m in sys.modules]]))
"""
    proc = run_restricted(code, distributions=MINIMUM)
    assert proc.returncode == 0, proc.stderr
    count, loaded = _last_json(proc.stdout)  # type: ignore[misc]
    assert count > 20 and loaded == []


def test_classifier_runs_without_tqdm(served: Served, tmp_path: Path) -> None:
    _, files = served
    code = f"""
import json, sys, torch
from wsl_images import Classifier
clf = Classifier("resnet18_ssl", checkpoint_path={str(files["zip"])!r}, workers=0, device="cpu")
(pred,) = clf.predict([torch.zeros(3, 40, 50, dtype=torch.uint8)], top_k=2)
print(json.dumps([len(pred.labels), "tqdm" in sys.modules]))
"""
    proc = run_restricted(code, distributions=MINIMUM, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout) == [2, False]


def _scenario_env(tmp_path: Path) -> dict[str, str]:
    return {**_env(tmp_path), "WSL_IMAGES_CACHE": str(tmp_path / "cache")}


def test_hub_users_packages_load_twice_the_second_time_memory_mapped(
    served: Served, tmp_path: Path
) -> None:
    server, files = served
    url = f"{server.url}/{files['legacy'].name}"
    proc = run_restricted(
        hub_scenarios.TWO_HUB_LOADS,
        distributions=HUB_USER,
        args=[str(REPO), str(tmp_path / "cache"), url],
        env=_scenario_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout) == hub_scenarios.EXPECTED["TWO_HUB_LOADS"]


def test_a_pretrained_load_without_requests_says_what_to_install(
    served: Served, tmp_path: Path
) -> None:
    server, files = served
    url = f"{server.url}/{files['legacy'].name}"
    proc = run_restricted(
        hub_scenarios.PRETRAINED_WITHOUT_DOWNLOADER,
        distributions=MINIMUM,
        args=[str(REPO), str(tmp_path / "cache"), url, str(files["legacy"])],
        env=_scenario_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    result = _last_json(proc.stdout)
    assert isinstance(result, dict)
    assert hub_scenarios.check_pretrained_without_downloader(result) == []
