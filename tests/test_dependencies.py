"""What works with only some dependencies installed (tests/restricted.py hides the others)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from restricted import REPO, blocked_modules, run_restricted
from server import FileServer

Served = tuple[FileServer, dict[str, Path]]
MINIMUM = ("torch", "torchvision")
# Owned by the cache rewrite (issue 8), which imports requests/tqdm only when a download starts
# and drops safetensors; until it lands these modules need them at import and are skipped here.
CACHE_MODULES = {
    "wsl_images.cache",
    "wsl_images._http",
    "wsl_images._stream",
    "wsl_images._transfer",
    "wsl_images.loading",
    "wsl_images.cli._cache",
}


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
    code = f"""
import importlib, json, pkgutil, sys, wsl_images
skip = {sorted(CACHE_MODULES)!r}
names = [m.name for m in pkgutil.walk_packages(wsl_images.__path__, "wsl_images.")]
for name in names:
    if name not in skip:
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
    # safetensors: needed by loading.py until the cache rewrite drops it (then remove it here).
    code = f"""
import json, sys, torch
from wsl_images import Classifier
clf = Classifier("resnet18_ssl", checkpoint_path={str(files["zip"])!r}, workers=0)
(pred,) = clf.predict([torch.zeros(3, 40, 50, dtype=torch.uint8)], top_k=2)
print(json.dumps([len(pred.labels), "tqdm" in sys.modules]))
"""
    proc = run_restricted(code, distributions=(*MINIMUM, "safetensors"), env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert _last_json(proc.stdout) == [2, False]
