"""Reading checkpoints: users' files read (mapped only on request), formats told apart by their
first bytes, and errors that say what failed."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from checkpoints import random_state_dict
from evalsets import write_photos
from PIL import Image

import wsl_images.checkpoints
from wsl_images import CheckpointError, Classifier, evaluate, export_model, get_model
from wsl_images.checkpoints import _reader as loading
from wsl_images.evaluation import imagenet_wnids

REPO = Path(__file__).resolve().parents[1]
FORMATS = ["legacy", "zip"]
on_linux = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="reads this process's mappings (Linux)"
)


def _save(state: object, path: Path, fmt: str) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def _mapped(path: Path) -> bool:
    """Whether ``path`` is mapped into this process."""
    return any(line.endswith(str(path)) for line in Path("/proc/self/maps").read_text().split("\n"))


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def other18() -> dict[str, torch.Tensor]:
    """resnet18 weights other than ``state18``: what a trainer saves next."""
    return random_state_dict("resnet18_ssl", seed=1)


# --- a user's file is read, not mapped, unless mmap=True ---


@pytest.mark.parametrize("fmt", FORMATS)
def test_rewriting_a_users_file_changes_nothing_in_the_loaded_model(
    fmt: str,
    tmp_path: Path,
    state18: dict[str, torch.Tensor],
    other18: dict[str, torch.Tensor],
) -> None:
    path = _save(state18, tmp_path / "latest.pth", fmt)
    model = get_model("resnet18_ssl", checkpoint_path=path)
    x = torch.randn(1, 3, 64, 64)
    before = _logits(model, x)
    _save(other18, path, fmt)  # a trainer's next torch.save: truncates, rewrites the same file
    assert torch.equal(_logits(model, x), before)
    assert torch.equal(model.fc.weight, state18["fc.weight"])
    assert torch.equal(model.bn1.running_var, state18["bn1.running_var"])
    path.write_bytes(b"")  # cut to nothing: a mapped model would die of SIGBUS here
    assert torch.equal(_logits(model, x), before)
    if Path("/proc/self/maps").exists():
        assert not _mapped(path)


@on_linux
@pytest.mark.parametrize("fmt", FORMATS)
def test_mmap_true_maps_a_users_file_so_a_rewrite_shows_through(
    fmt: str,
    tmp_path: Path,
    state18: dict[str, torch.Tensor],
    other18: dict[str, torch.Tensor],
) -> None:
    """The documented caveat of mmap=True, as with torch.load(mmap=True)."""
    path = _save(state18, tmp_path / "latest.pth", fmt)
    model = get_model("resnet18_ssl", checkpoint_path=path, mmap=True)
    assert _mapped(path)
    assert torch.equal(model.fc.weight, state18["fc.weight"])
    _save(other18, path, fmt)
    assert not torch.equal(model.fc.weight, state18["fc.weight"])  # views of the file
    if fmt == "zip":  # same keys and shapes, same records: the new weights, exactly
        assert torch.equal(model.fc.weight, other18["fc.weight"])


def test_classifier_reads_a_users_file_and_maps_it_on_request(
    tmp_path: Path, state18: dict[str, torch.Tensor], other18: dict[str, torch.Tensor]
) -> None:
    path = _save(state18, tmp_path / "latest.pth", "legacy")
    clf = Classifier("resnet18_ssl", checkpoint_path=path, device="cpu", workers=0)
    _save(other18, path, "legacy")
    # fc and BN stay as loaded on a CPU (the convolutions are converted to channels_last)
    assert torch.equal(clf.model.fc.weight, state18["fc.weight"])
    assert torch.equal(clf.model.bn1.running_mean, state18["bn1.running_mean"])
    if Path("/proc/self/maps").exists():
        assert not _mapped(path)
        mapped = Classifier("resnet18_ssl", checkpoint_path=path, mmap=True, device="cpu")
        assert _mapped(path) and torch.equal(mapped.model.fc.weight, other18["fc.weight"])
        _save(state18, path, "legacy")  # rewritten under the mapped classifier
        assert not torch.equal(mapped.model.fc.weight, other18["fc.weight"])


def test_evaluate_and_export_pass_mmap_to_the_loader(
    tmp_path: Path, state18: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(state18, tmp_path / "r18.pth", "zip")
    seen: list[bool] = []
    real = loading.read_checkpoint

    def recorded(where: Path, *, mmap: bool = False) -> loading.Checkpoint:
        seen.append(mmap)
        return real(where, mmap=mmap)

    monkeypatch.setattr(
        wsl_images.checkpoints, "read_checkpoint", recorded
    )  # as models.py finds it
    photos = write_photos(tmp_path / "photos", 2)
    folder = tmp_path / "val" / imagenet_wnids()[0]
    folder.mkdir(parents=True)
    for photo in photos:
        photo.rename(folder / photo.name)
    for mmap in (False, True):
        evaluate(
            "resnet18_ssl",
            tmp_path / "val",
            checkpoint_path=path,
            mmap=mmap,
            workers=0,
            device="cpu",
        )
        out = tmp_path / f"m{mmap}.pt"
        export_model(
            "resnet18_ssl", out, format="torchscript", checkpoint_path=path, mmap=mmap,
            image_size=64,
        )  # fmt: skip
    assert seen == [False, False, True, True]


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(), reason="measures Linux /proc memory counters"
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_reading_a_users_file_holds_one_copy(fmt: str, tmp_path: Path) -> None:
    """A read (not mapped) load of a 100 MB resnet50 file: one copy of the weights in memory at
    the peak, none more after it (measured in a fresh process)."""
    checkpoint = _save(random_state_dict("resnet50_ssl"), tmp_path / "resnet50.pth", fmt)
    probe = REPO / "tests" / "memory_probe.py"
    proc = subprocess.run(
        [sys.executable, str(probe), str(checkpoint), "resnet50_ssl", "float32"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    weights = m["loaded_bytes"]
    slack = 0.25 * weights  # allocator and interpreter noise; a second copy would be 1.0x
    assert weights == pytest.approx(checkpoint.stat().st_size, rel=0.01)
    assert weights - slack < m["anon_after"] < weights + slack, m  # read: anonymous memory
    assert m["peak"] < weights + slack, m


# --- zip or legacy: by the first four bytes, as torch decides ---


@pytest.mark.parametrize("mmap", [False, True])
def test_a_legacy_file_with_a_zip_end_record_inside_is_read_as_legacy(
    tmp_path: Path, mmap: bool
) -> None:
    # The last storage ends the file with an end-of-archive record (22 bytes, no comment).
    record = torch.tensor(list(b"PK\x05\x06" + bytes(18)), dtype=torch.uint8)
    state = {"weight": torch.randn(4, 3), "record": record}
    path = _save(state, tmp_path / "legacy.pth", "legacy")
    assert zipfile.is_zipfile(path)  # what used to send it to the zip reader
    loaded = loading.read_state_dict(path, mmap=mmap)
    reference = torch.load(path, weights_only=True)
    assert list(loaded) == list(reference)
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())


# --- errors say what failed; only a refused global is refused for safety ---


def test_a_jpeg_is_named_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(CheckpointError, match=r"'.*cat\.jpg' is not a PyTorch checkpoint: it "
                       r"looks like a JPEG image\.$"):  # fmt: skip
        get_model("resnet18_ssl", checkpoint_path=path)


def test_a_torchscript_archive_is_named_and_not_run(tmp_path: Path) -> None:
    """torch.load (< 2.4) hands such a file to torch.jit.load, even with weights_only=True."""
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(CheckpointError, match=r"is a TorchScript archive \(torch\.jit\.save\)"):
        get_model("resnet18_ssl", checkpoint_path=path)


def test_an_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"'.*empty\.pth' is empty \(0 bytes\)"):
        get_model("resnet18_ssl", checkpoint_path=path)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.02, 0.5])  # inside the pickle, inside the tensor data
def test_a_truncated_file_says_it_is_cut_short(
    fmt: str, keep: float, tmp_path: Path, state18: dict[str, torch.Tensor]
) -> None:
    path = _save(state18, tmp_path / "cut.pth", fmt)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    match = "zip archive is damaged or cut short" if fmt == "zip" else "cut short"
    with pytest.raises(CheckpointError, match=match) as info:
        get_model("resnet18_ssl", checkpoint_path=path)
    assert "refused" not in str(info.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_dict_with_a_non_tensor_entry_names_it(
    fmt: str, tmp_path: Path, state18: dict[str, torch.Tensor]
) -> None:
    path = _save({**state18, "epoch": 7}, tmp_path / "ckpt.pth", fmt)
    with pytest.raises(CheckpointError, match=r"its entry 'epoch' is an int, not a tensor\.$"):
        get_model("resnet18_ssl", checkpoint_path=path)
    wrapped = {"state_dict": {**state18, "step": 1.5, "name": "x"}, "epoch": 7}
    _save(wrapped, path, fmt)
    with pytest.raises(
        CheckpointError,
        match=r"its entry 'step' \(in its 'state_dict' entry\) is a float, not a tensor "
        r"\(and 1 more entries that are not tensors\)",
    ):
        get_model("resnet18_ssl", checkpoint_path=path)
    _save([torch.zeros(1)], path, fmt)
    with pytest.raises(CheckpointError, match=r"it holds a list\.$"):
        get_model("resnet18_ssl", checkpoint_path=path)


class _Evil:
    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, ("true",))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_refused_global_is_named(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save(
        {"w": _Evil()}, path, pickle_module=pickle, _use_new_zipfile_serialization=fmt == "zip"
    )
    with pytest.raises(
        CheckpointError,
        match=r"is refused for safety: it needs '(posix|nt)\.system', which "
        r"torch\.load\(weights_only=True\) does not allow",
    ):
        get_model("resnet18_ssl", checkpoint_path=path)


def test_an_unreadable_path_says_what_failed(tmp_path: Path) -> None:
    # A folder: EISDIR on POSIX, EACCES on Windows.
    with pytest.raises(CheckpointError, match=r"Could not open checkpoint '.*': \[Errno \d+\]"):
        loading.read_state_dict(tmp_path)


@pytest.mark.skipif(not hasattr(os, "pread"), reason="fails os.pread")
def test_an_io_error_says_what_failed(
    tmp_path: Path,
    state18: dict[str, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = _save(state18, tmp_path / "r18.pth", "legacy")

    def failing(*args: object) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pread", failing)
    with caplog.at_level(logging.WARNING, logger="wsl_images.checkpoints._legacy"):
        state = loading.read_state_dict(path)  # torch.load, which does not use pread, reads it
    assert torch.equal(state["fc.weight"], state18["fc.weight"])
    assert "the fast reader failed (OSError: [Errno 5] Input/output error)" in caplog.text

    def load(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(torch, "load", load)  # both readers fail: the error says how
    with pytest.raises(CheckpointError, match=r"reading the file failed \(OSError: \[Errno 5\]"):
        loading.read_state_dict(path)


class _FailingSeeks:
    """A checkpoint file whose positional reads fail (a disk error) once it has been opened."""

    def __init__(self, f: object) -> None:
        self._f = f

    def seek(self, *args: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)

    def __enter__(self) -> _FailingSeeks:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mapped"])
def test_without_pread_an_io_error_says_what_failed_never_refused(
    mmap: bool,
    tmp_path: Path,
    state18: dict[str, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As on Windows (no os.pread): a read that fails is named as one, on the portable path of
    the legacy reader and then in torch.load; only a refused global says "refused"."""
    from wsl_images.checkpoints import _legacy

    for call in ("pread", "pwrite", "preadv"):
        monkeypatch.delattr(os, call, raising=False)
    path = _save(state18, tmp_path / "r18.pth", "legacy")
    real_open = open
    monkeypatch.setattr(_legacy, "open", lambda *a, **k: _FailingSeeks(real_open(*a, **k)), False)
    with caplog.at_level(logging.WARNING, logger="wsl_images.checkpoints._legacy"):
        state = loading.read_state_dict(path, mmap=mmap)  # torch.load reads it after all
    assert torch.equal(state["fc.weight"], state18["fc.weight"])
    assert "the fast reader failed (OSError: [Errno 5] Input/output error)" in caplog.text

    def load(*args: object, **kwargs: object) -> object:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(torch, "load", load)  # both readers fail: the error says how
    with pytest.raises(CheckpointError) as failed:
        loading.read_state_dict(path, mmap=mmap)
    text = str(failed.value)
    assert "reading the file failed (OSError: [Errno 5] Input/output error)" in text
    assert "refused" not in text and "safety" not in text
