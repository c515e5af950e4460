"""get_model, entrypoints and loading, through the real cache and a loopback server."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from checkpoints import save_hashed
from server import FileServer

import wsl_images
from wsl_images import CheckpointError, HashMismatchError, get_model
from wsl_images.cache._paths import derived_path

REPO = Path(__file__).resolve().parents[1]
Served = tuple[FileServer, dict[str, Path]]


def _reference_logits(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    ref = torchvision.models.resnet18()
    ref.load_state_dict(state)
    with torch.no_grad():
        return ref.eval()(x)


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits, after checking the model holds exactly the generated weights.

    Logits are then compared with the default float32 tolerance: memory-mapped tensors can take
    other (equally valid) kernel paths than freshly allocated ones, which differ in the last bit.
    """
    with torch.no_grad():
        return model.eval()(x)


def _assert_same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    ours = model.state_dict()
    assert list(ours) == list(state)
    for key, value in state.items():
        assert torch.equal(ours[key], value), key


def test_pretrained_false_is_random_resnet() -> None:
    model = get_model("resnext50_32x4d_swsl", pretrained=False, num_classes=7)
    assert isinstance(model, torchvision.models.ResNet)
    assert model.fc.out_features == 7
    assert not any(p.is_meta for p in model.parameters())


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_registered_weights_load_exactly(
    fmt: str,
    served: Served,
    state18: dict[str, torch.Tensor],
    register_file: Callable[[str, str], None],
    isolated_cache: Path,
) -> None:
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files[fmt].name}")
    model = get_model("resnet18_ssl", progress=False)
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(_logits(model, x), _reference_logits(state18, x))
    _assert_same_weights(model, state18)
    assert (isolated_cache / files[fmt].name).is_file()
    assert [p for p in isolated_cache.rglob("*.part")] == []  # no temp files left behind


def _mapped_files() -> str:
    """The files mapped into this process (Linux): a memory-mapped checkpoint shows here."""
    return Path("/proc/self/maps").read_text()


@pytest.mark.parametrize("positional_io", [True, False], ids=["native", "no-positional-io"])
def test_legacy_file_is_mapped_in_place_and_parsed_once(
    served: Served,
    register_file: Callable[[str, str], None],
    isolated_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    state18: dict[str, torch.Tensor],
    positional_io: bool,
) -> None:
    """Download, first and cached load, also without os.pread, os.pwrite and os.preadv (as on
    Windows): the first load parses the file and keeps its layout, the second maps the tensors
    by it."""
    if not positional_io:
        for call in ("pread", "pwrite", "preadv"):
            monkeypatch.delattr(os, call, raising=False)
    server, files = served
    source = isolated_cache / files["legacy"].name
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")
    before = server.requests[f"/{files['legacy'].name}"]
    get_model("resnet18_ssl", progress=False)
    layout = derived_path(source)  # the first load kept where the tensors lie, nothing else
    assert layout.parent == isolated_cache / ".wsl-images" / "derived"
    kept = [p for p in isolated_cache.rglob("*") if p.is_file() and p != source]
    assert sum(p.stat().st_size for p in kept) < 64 << 10  # no copy of the weights anywhere

    unpicklers: list[object] = []
    real = torch._weights_only_unpickler.Unpickler

    def recorded(*args: object, **kwargs: object) -> object:
        unpicklers.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch._weights_only_unpickler, "Unpickler", recorded)
    model = get_model("resnet18_ssl", progress=False)
    assert unpicklers == []  # the pickle is not parsed again: the layout places the tensors
    if Path("/proc/self/maps").exists():
        assert str(source) in _mapped_files()  # the cached file itself is mapped
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(_logits(model, x), _reference_logits(state18, x))
    _assert_same_weights(model, state18)
    assert server.requests[f"/{files['legacy'].name}"] == before + 1  # downloaded once


def test_a_file_that_cannot_be_mapped_is_read_and_the_logs_say_why(
    served: Served,
    register_file: Callable[[str, str], None],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    state18: dict[str, torch.Tensor],
) -> None:
    """Mapping refused (no address space left, a file system that cannot map): the cached load
    still gives the weights, and the log names the mapping, not the layout, as what failed."""
    from wsl_images.checkpoints import _layout, _legacy

    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['legacy'].name}")
    get_model("resnet18_ssl", progress=False)  # downloaded, parsed, its layout kept

    def refuse(path: object, size: int) -> object:
        raise RuntimeError(
            f"unable to mmap {size} bytes from file <{path}>: Cannot allocate memory"
        )

    monkeypatch.setattr(_layout, "map_file", refuse)
    monkeypatch.setattr(_legacy, "map_file", refuse)
    with caplog.at_level(logging.INFO, logger="wsl_images"):
        model = get_model("resnet18_ssl", progress=False)
    _assert_same_weights(model, state18)
    assert "mapping the file failed (RuntimeError: unable to mmap" in caplog.text
    assert "does not describe" not in caplog.text and "refused" not in caplog.text


def test_entrypoints_and_hub_load_local(
    served: Served,
    register_file: Callable[[str, str], None],
) -> None:
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['zip'].name}")
    model = wsl_images.resnet18_ssl(progress=False)  # type: ignore[attr-defined]
    assert isinstance(model, torchvision.models.ResNet)
    hub_model = torch.hub.load(
        str(REPO), "resnet18_swsl", source="local", pretrained=False, num_classes=3
    )
    assert hub_model.fc.out_features == 3
    url = f"{server.url}/{files['zip'].name}"
    hub_model = torch.hub.load(
        str(REPO), "resnet18_swsl", source="local", checkpoint_path=url, progress=False
    )
    for (k, a), b in zip(model.state_dict().items(), hub_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_num_classes_keeps_backbone_and_new_head(
    served: Served,
    state18: dict[str, torch.Tensor],
) -> None:
    _, files = served
    model = get_model("resnet18_ssl", checkpoint_path=files["legacy"], num_classes=10)
    assert model.fc.out_features == 10 and not model.fc.weight.is_meta
    assert torch.equal(model.layer4[1].conv2.weight, state18["layer4.1.conv2.weight"])
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_checkpoint_path_as_local_file(
    fmt: str, served: Served, state18: dict[str, torch.Tensor], isolated_cache: Path
) -> None:
    _, files = served
    model = get_model("resnet18_swsl", checkpoint_path=str(files[fmt]))
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(_logits(model, x), _reference_logits(state18, x))
    assert not isolated_cache.exists() or not any(isolated_cache.iterdir())  # nothing written


def test_checkpoint_path_as_url_goes_through_cache(
    served: Served,
    state18: dict[str, torch.Tensor],
    isolated_cache: Path,
) -> None:
    server, files = served
    url = f"{server.url}/{files['legacy'].name}"
    model = get_model("resnet18_ssl", checkpoint_path=url, progress=False)
    assert (isolated_cache / files["legacy"].name).is_file()
    assert torch.equal(model.conv1.weight, state18["conv1.weight"])


def test_hash_mismatch_deletes_download(
    tmp_path: Path, state18: dict[str, torch.Tensor], isolated_cache: Path
) -> None:
    good = save_hashed(state18, tmp_path / "srv", "weights", legacy=False)
    bad = good.with_name("weights-00000000.pth")
    good.rename(bad)
    with (
        FileServer(bad.parent) as server,
        pytest.raises(
            HashMismatchError, match=r"expected 00000000\.\.\. but got [0-9a-f]{64}.*deleted"
        ) as info,
    ):
        get_model("resnet18_ssl", checkpoint_path=f"{server.url}/{bad.name}", progress=False)
    assert f"{server.url}/{bad.name}" in str(info.value)
    assert not isolated_cache.exists() or sorted(p.name for p in isolated_cache.iterdir()) == [
        ".wsl-images"  # locks and records only: no file, no temp file
    ]


class _Evil:
    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        import os

        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for legacy in (True, False):
        path = tmp_path / f"evil_{legacy}.pth"
        torch.save(
            {"conv1.weight": torch.zeros(1), "x": _Evil()},
            path,
            _use_new_zipfile_serialization=not legacy,
            pickle_module=pickle,
        )
        with pytest.raises(CheckpointError, match="weights_only=True"):
            get_model("resnet18_ssl", checkpoint_path=path)
    assert not (tmp_path / "PWNED").exists()


def test_wrong_architecture_lists_mismatches(
    tmp_path: Path, state18: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "r18.pth"
    torch.save(state18, path)
    with pytest.raises(CheckpointError, match=r"shape mismatches .*conv1.weight|missing keys"):
        get_model("resnet50_ssl", checkpoint_path=path)
    partial = dict(state18)
    del partial["layer1.0.conv1.weight"]
    partial["extra.weight"] = torch.zeros(2)
    torch.save(partial, path)
    with pytest.raises(
        CheckpointError,
        match=r"missing keys \(1\): layer1.0.conv1.weight.*"
        r"unexpected keys \(1\): extra.weight \(2,\)",
    ):
        get_model("resnet18_ssl", checkpoint_path=path)


def test_training_checkpoint_wrappers_are_unwrapped(
    tmp_path: Path, state18: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state18.items()}, "epoch": 3}, path)
    model = get_model("resnet18_ssl", checkpoint_path=path)
    assert torch.equal(model.fc.bias, state18["fc.bias"])


def test_bad_checkpoint_path_is_clear() -> None:
    with pytest.raises(ValueError, match=r"'/no/such/file\.pth' is not a file"):
        get_model("resnet18_ssl", checkpoint_path="/no/such/file.pth")


def test_frozen_batchnorm_backbone(served: Served, state18: dict[str, torch.Tensor]) -> None:
    from torchvision.ops import FrozenBatchNorm2d

    _, files = served
    model = get_model("resnet18_ssl", checkpoint_path=files["zip"], norm_layer=FrozenBatchNorm2d)
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    assert torch.equal(model.bn1.running_var, state18["bn1.running_var"])


def test_cache_dir_keyword_keeps_downloads_there(
    served: Served,
    register_file: Callable[[str, str], None],
    isolated_cache: Path,
    tmp_path: Path,
) -> None:
    server, files = served
    register_file("resnet18_ssl", f"{server.url}/{files['zip'].name}")
    other = tmp_path / "other"
    wsl_images.resnet18_ssl(progress=False, cache_dir=other)  # type: ignore[attr-defined]
    assert (other / files["zip"].name).is_file()
    requests = server.requests[f"/{files['zip'].name}"]
    clf = wsl_images.Classifier(
        "ssl_resnet18", progress=False, cache_dir=other, workers=0, device="cpu"
    )
    assert clf.name == "resnet18_ssl"
    assert server.requests[f"/{files['zip'].name}"] == requests  # found in `other`
    url = f"{server.url}/{files['legacy'].name}"
    torch.hub.load(str(REPO), "resnet18_swsl", source="local", checkpoint_path=url, cache_dir=other)
    assert (other / files["legacy"].name).is_file()
    assert not (isolated_cache / files["zip"].name).exists()
    assert not (isolated_cache / files["legacy"].name).exists()


_WITHOUT_DEVICE_CONSTRUCTORS = """
import json, sys, types
import torch, torch.utils._device as real
# A torch without it, for importers; torch's own DeviceContext keeps its module's globals.
proxy = types.ModuleType(real.__name__)
vars(proxy).update({k: v for k, v in vars(real).items() if k != "_device_constructors"})
sys.modules[real.__name__] = torch.utils._device = proxy
sys.path.insert(0, sys.argv[1])
import hubconf, wsl_images
from wsl_images.zoo import meta_skeleton
hub = torch.hub.load(sys.argv[1], "resnet18_ssl", source="local", pretrained=False)
model = wsl_images.get_model("resnet18_ssl", checkpoint_path=sys.argv[2])
state = torch.load(sys.argv[2], weights_only=True)
print(json.dumps({
    "skeleton": type(meta_skeleton()).__name__,
    "hub": type(hub).__name__,
    "meta": sorted({str(p.device) for p in model.parameters()}),
    "equal": all(torch.equal(model.state_dict()[k], v) for k, v in state.items()),
}))
"""


def test_models_build_without_torchs_private_device_constructors(
    tmp_path: Path, state18: dict[str, torch.Tensor]
) -> None:
    """torch.utils._device._device_constructors is private: without it the package imports,
    hubconf loads and models load, built under torch.device("meta") instead."""
    checkpoint = tmp_path / "r18.pth"
    torch.save(state18, checkpoint)
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DEVICE_CONSTRUCTORS, str(REPO), str(checkpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts == {"skeleton": "ExitStack", "hub": "ResNet", "meta": ["cpu"], "equal": True}
