"""What a torch.hub user meets, as scripts, run in environments holding only some dependencies.

Each scenario is Python code run in a fresh interpreter with ``argv = [repo, cache, url]``: the
checkout, an empty cache folder, and the URL of a generated legacy-format resnet18_ssl
checkpoint on a loopback server. It prints one JSON line that :data:`EXPECTED` describes.

They run two ways: inside the test suite with the other packages hidden
(tests/restricted.py, tests/test_dependencies.py), and in CI in real minimal venvs
(``python tests/hub_scenarios.py``, from ``.ci/run``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HUB_USER = ("torch", "torchvision", "requests", "tqdm")  # what torch.hub users have
MINIMUM = ("torch", "torchvision")

# Two loads of a checkpoint URL through torch.hub: the first downloads, verifies and parses the
# file (keeping its layout); the second parses no pickle and maps the cached file itself (it
# shows in /proc/self/maps). No copy of the weights is written.
TWO_HUB_LOADS = """
import json, pathlib, sys, torch, torch._weights_only_unpickler as w
repo, cache, url = sys.argv[1:4]
parses = []
real = w.Unpickler
w.Unpickler = lambda *a, **kw: parses.append(1) or real(*a, **kw)
first = torch.hub.load(repo, "resnet18_ssl", source="local", checkpoint_path=url, progress=False)
parsed_first = len(parses)
second = torch.hub.load(repo, "resnet18_ssl", source="local", checkpoint_path=url, progress=False)
source = pathlib.Path(cache, url.rsplit("/", 1)[1])
maps = pathlib.Path("/proc/self/maps")
mapped = str(source) in maps.read_text() if maps.exists() else True
others = [p for p in pathlib.Path(cache).rglob("*") if p.is_file() and p != source]
copies = sum(p.stat().st_size for p in others)
pairs = zip(first.state_dict().values(), second.state_dict().values())
same = all(torch.equal(a, b) for a, b in pairs)
print(json.dumps({"second_load_parses": len(parses) - parsed_first, "mapped": mapped,
                  "first_load_parsed": parsed_first > 0, "no_copy": copies < 65536,
                  "same_weights": same, "modules": sorted(m for m in ("safetensors", "onnx")
                                                          if m in sys.modules)}))
"""

# Without requests/tqdm: a pretrained load must say what to install; a cached file still loads.
PRETRAINED_WITHOUT_DOWNLOADER = """
import json, os, shutil, sys, torch
repo, cache, url, cached = sys.argv[1:5]
try:
    torch.hub.load(repo, "resnet18_ssl", source="local", checkpoint_path=url, progress=False)
    message = None
except ImportError as exc:
    message = str(exc)
os.makedirs(cache, exist_ok=True)
shutil.copy(cached, cache)  # as if fetched earlier, or copied from a machine with a network
model = torch.hub.load(repo, "resnet18_ssl", source="local", checkpoint_path=url, progress=False)
print(json.dumps({"message": message, "cached_loads": type(model).__name__}))
"""

EXPECTED = {
    "TWO_HUB_LOADS": {
        "second_load_parses": 0,
        "mapped": True,
        "first_load_parsed": True,
        "no_copy": True,
        "same_weights": True,
        "modules": [],
    },
}


def check_pretrained_without_downloader(result: dict[str, object]) -> list[str]:
    """Problems with PRETRAINED_WITHOUT_DOWNLOADER's output (empty: as it should be)."""
    message = str(result.get("message"))
    problems = []
    if "pip install requests tqdm" not in message:
        problems.append(f"the message does not name `pip install requests tqdm`: {message!r}")
    if result.get("cached_loads") != "ResNet":
        problems.append(f"a cached file did not load: {result.get('cached_loads')!r}")
    return problems


def _served_checkpoint(folder: Path) -> tuple[object, str, Path]:
    """A loopback server (started) serving a generated legacy checkpoint: (server, url, file)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from checkpoints import random_state_dict, save_hashed
    from server import FileServer

    path = save_hashed(random_state_dict("resnet18_ssl"), folder, "ssl18", legacy=True)
    server = FileServer(folder).__enter__()
    return server, f"{server.url}/{path.name}", path


def main() -> int:
    """CI: run the scenarios that fit this interpreter's environment; exit 1 on a problem."""
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    have_downloader = all(importlib.util.find_spec(m) for m in ("requests", "tqdm"))
    with tempfile.TemporaryDirectory() as tmp:
        served, url, path = _served_checkpoint(Path(tmp) / "served")
        cache = Path(tmp) / "cache"
        env = {**os.environ, "WSL_IMAGES_CACHE": str(cache), "TORCH_HOME": str(Path(tmp) / "th")}
        code, extra = (
            (TWO_HUB_LOADS, []) if have_downloader else (PRETRAINED_WITHOUT_DOWNLOADER, [str(path)])
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(repo), str(cache), url, *extra],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        served.__exit__()  # type: ignore[attr-defined]
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if have_downloader:
        problems = [] if result == EXPECTED["TWO_HUB_LOADS"] else [f"got {result}"]
    else:
        problems = check_pretrained_without_downloader(result)
    label = "torch, torchvision, requests, tqdm" if have_downloader else "torch, torchvision"
    for problem in problems:
        print(f"hub scenario with {label}: {problem}", file=sys.stderr)
    print(f"hub scenario with {label}: {'FAILED' if problems else 'ok'} {result}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
