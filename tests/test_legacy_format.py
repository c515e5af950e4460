"""Legacy-format files mapped in place, layouts, mapping: the same tensors as torch.load."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import pickle
import platform
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from wsl_images import CheckpointError
from wsl_images.checkpoints import _layout as layout
from wsl_images.checkpoints import _legacy as legacy_format
from wsl_images.checkpoints import read_state_dict
from wsl_images.checkpoints._mapping import map_file


def _save_legacy(obj: object, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


def _mixed(pad: int) -> OrderedDict[str, torch.Tensor]:
    """Tensors of several dtypes, a view sharing a storage, a transposed one; ``pad`` lengthens
    a key, which moves every storage's offset in the file (alignment: any)."""
    torch.manual_seed(pad)
    base = torch.randn(6, 5)
    return OrderedDict(
        [
            ("w" * (1 + pad), torch.randn(3, 4)),
            ("half", torch.randn(7).half()),
            ("bf16", torch.randn(5).bfloat16()),
            ("count", torch.tensor(1234, dtype=torch.long)),
            ("mask", torch.tensor([True, False, True])),
            ("bytes", torch.arange(9, dtype=torch.uint8)),
            ("base", base),
            ("view", base[2:, 1:3]),  # shares base's storage, at an offset, strided
            ("transposed", base.t()),
            ("empty", torch.zeros(0, 3)),
        ]
    )


@pytest.mark.parametrize("pad", [0, 1, 2, 3])
def test_mapped_tensors_equal_torch_load_at_every_alignment(tmp_path: Path, pad: int) -> None:
    path = _save_legacy(_mixed(pad), tmp_path / "mixed.pth")
    reference = torch.load(path, weights_only=True)
    mapped, offsets = legacy_format.load(path)
    assert isinstance(mapped, OrderedDict) and list(mapped) == list(reference)
    for key, value in reference.items():
        ours = mapped[key]
        assert ours.dtype == value.dtype and ours.shape == value.shape, key
        assert ours.stride() == value.stride() and torch.equal(ours, value), key
    # Views of one mapping of the file, storages shared as saved.
    shared = mapped["view"].untyped_storage(), mapped["base"].untyped_storage()
    assert shared[0].data_ptr() == shared[1].data_ptr()
    assert {t.untyped_storage().data_ptr() for t in mapped.values()} <= set(offsets)
    # Writes stay in this process (copy-on-write): the file is unchanged.
    before = path.read_bytes()
    mapped["base"].add_(1)
    assert path.read_bytes() == before


def test_misaligned_weights_compute_the_same(tmp_path: Path) -> None:
    conv = torch.nn.Conv2d(3, 8, 3, groups=1)
    for pad in range(4):
        state = {"x" * pad: torch.zeros(1), **conv.state_dict()}
        mapped, _ = legacy_format.load(_save_legacy(state, tmp_path / f"c{pad}.pth"))
        assert isinstance(mapped, dict)
        x = torch.randn(2, 3, 16, 16)
        out = torch.nn.functional.conv2d(x, mapped["weight"], mapped["bias"])
        torch.testing.assert_close(out, conv(x))


def test_parameters_and_nested_containers(tmp_path: Path) -> None:
    param = torch.nn.Parameter(torch.randn(4), requires_grad=False)
    obj = {"state_dict": {"p": param, "list": [torch.ones(2), (torch.zeros(1),)]}, "epoch": 3}
    mapped, _ = legacy_format.load(_save_legacy(obj, tmp_path / "nested.pth"))
    assert isinstance(mapped, dict) and mapped["epoch"] == 3
    inner = mapped["state_dict"]
    assert isinstance(inner["p"], torch.nn.Parameter) and torch.equal(inner["p"], param)
    assert torch.equal(inner["list"][0], torch.ones(2)) and isinstance(inner["list"][1], tuple)
    assert not any(t.is_meta for t in (inner["p"], inner["list"][0], inner["list"][1][0]))


def test_a_file_cut_short_is_refused_not_mapped(tmp_path: Path) -> None:
    path = _save_legacy({"w": torch.randn(1000)}, tmp_path / "cut.pth")
    path.write_bytes(path.read_bytes()[:-100])  # mapping it would fault past the end
    with pytest.raises(CheckpointError, match="cut short"):
        read_state_dict(path)


def test_a_big_endian_file_is_read_whole_by_torch_load(tmp_path: Path) -> None:
    path = _save_legacy({"w": torch.randn(10)}, tmp_path / "be.pth")
    data = path.read_bytes()
    key = data.index(b"little_endian") + len(b"little_endian")
    flag = data.index(b"\x88", key)  # NEWTRUE, its value (after the key's memo opcode)
    assert flag - key <= 2
    path.write_bytes(data[:flag] + b"\x89" + data[flag + 1 :])  # NEWFALSE
    state, offsets = legacy_format.load(path)
    assert offsets == {}  # not mapped: read by torch.load(weights_only=True)
    assert isinstance(state, dict) and torch.equal(state["w"], torch.load(path)["w"])


def test_layout_maps_the_same_tensors_and_checks_them(tmp_path: Path) -> None:
    path = _save_legacy(_mixed(1), tmp_path / "mixed.pth")
    state, offsets = legacy_format.load(path)
    assert isinstance(state, dict)
    described = layout.describe(state, offsets, path.stat().st_size)
    again = layout.map_tensors(path, described)
    assert list(again) == list(state)
    for key, value in state.items():
        assert again[key].stride() == value.stride() and torch.equal(again[key], value), key

    def edited(change: dict[str, object]) -> bytes:
        data = json.loads(described)
        data.update(change)
        return json.dumps(data).encode()

    size = path.stat().st_size
    entry = json.loads(described)["tensors"]["base"]
    outside = {"tensors": {"base": [entry[0], size - 4, 8, *entry[3:]]}}  # ends past the file
    too_long = {"tensors": {"base": [entry[0], entry[1], 8, 0, [6, 5], [5, 1]]}}  # past storage
    for change, match in [
        ({"size": size + 1}, "another file"),
        (outside, "outside the file"),
        (too_long, "does not describe"),
        ({"tensors": {"base": ["complex64", *entry[1:]]}}, "does not describe"),
    ]:
        with pytest.raises(ValueError, match=match):
            layout.map_tensors(path, edited(change))


def _resident_bytes(path: Path, start: int) -> int:
    """Rss of this process's mapping of ``path`` that starts at ``start`` (Linux smaps)."""
    found = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            found = int(fields[0].split("-")[0], 16) == start and fields[-1] == str(path)
        elif found and fields[0] == "Rss:":
            return int(fields[1]) * 1024
    msg = f"no mapping of {path} at {start:#x}"
    raise AssertionError(msg)


def _kernel_at_least(major: int, minor: int) -> bool:
    release = platform.release().split(".")
    return (int(release[0]), int(release[1].split("-")[0])) >= (major, minor)


@pytest.mark.skipif(
    not Path("/proc/self/smaps").exists() or not _kernel_at_least(5, 14),
    reason="MADV_POPULATE_READ needs Linux 5.14",
)
def test_a_mapped_file_is_paged_in_ahead(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(os.urandom(4 << 20))  # in the page cache, as a cached checkpoint is
    size = path.stat().st_size
    mapping = map_file(path, size)
    for thread in threading.enumerate():
        if thread.name == "wsl-images-page-in":
            thread.join()
    assert _resident_bytes(path, mapping.data_ptr()) == size  # mapped without a single touch
    assert path.read_bytes()[:16] == bytes(mapping[0:16].tolist())


# --- without torch's private parts, or without os.pread: the same tensors ---


def _no_unpickler(monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch without ``torch._weights_only_unpickler`` (torch.load keeps its own reference)."""
    monkeypatch.setitem(sys.modules, "torch._weights_only_unpickler", None)
    monkeypatch.delattr(torch, "_weights_only_unpickler")


def _no_internal_keyword(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``TypedStorage`` that no longer takes the private ``_internal`` keyword."""

    class Strict(torch.TypedStorage):
        def __init__(self, *args: object, **kwargs: object) -> None:
            if "_internal" in kwargs:
                msg = "__init__() got an unexpected keyword argument '_internal'"
                raise TypeError(msg)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "TypedStorage", Strict)


def _no_cdata(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storages without the private ``_cdata``."""

    def missing(self: object) -> int:
        raise AttributeError("'UntypedStorage' object has no attribute '_cdata'")

    monkeypatch.setattr(torch.UntypedStorage, "_cdata", property(missing), raising=False)


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("remove", [_no_unpickler, _no_internal_keyword, _no_cdata])
def test_without_torchs_private_parts_loads_fall_back_to_torch_load(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    remove: Callable[[pytest.MonkeyPatch], None],
    mmap: bool,
) -> None:
    path = _save_legacy(_mixed(1), tmp_path / "mixed.pth")
    reference = torch.load(path, weights_only=True)
    evil = tmp_path / "evil.pth"
    torch.save({"w": _Evil()}, evil, pickle_module=pickle, _use_new_zipfile_serialization=False)
    remove(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="wsl_images.checkpoints._legacy"):
        state = read_state_dict(path, mmap=mmap)
    assert "Reading mixed.pth with torch.load(weights_only=True): the fast reader failed" in (
        caplog.text
    )
    assert list(state) == list(reference)
    for key, value in reference.items():
        assert state[key].stride() == value.stride() and torch.equal(state[key], value), key
    # The fallback is torch.load(weights_only=True): a refused global stays refused, unrun.
    with pytest.raises(CheckpointError, match=r"refused for safety: it needs '(posix|nt)\.system'"):
        read_state_dict(evil, mmap=mmap)


class _Evil:
    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("mmap", [True, False])
def test_without_pread_legacy_files_load_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mmap: bool
) -> None:
    """As on Windows, which has no os.pread: the same tensors, by the fast path."""
    path = _save_legacy(_mixed(2), tmp_path / "mixed.pth")
    reference = torch.load(path, weights_only=True)
    _, offsets = legacy_format.load(path, mmap=mmap)
    monkeypatch.delattr(os, "pread", raising=False)
    with caplog.at_level(logging.INFO, logger="wsl_images.checkpoints._legacy"):
        state, again = legacy_format.load(path, mmap=mmap)
    assert caplog.text == ""  # no fallback to torch.load
    assert sorted(again.values()) == sorted(offsets.values())  # storages placed the same
    assert isinstance(state, dict) and list(state) == list(reference)
    for key, value in reference.items():
        assert state[key].stride() == value.stride() and torch.equal(state[key], value), key
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="cut short"):
        read_state_dict(cut, mmap=mmap)


def test_reading_unmapped_gives_the_same_tensors_in_memory_of_their_own(tmp_path: Path) -> None:
    path = _save_legacy(_mixed(3), tmp_path / "mixed.pth")
    reference = torch.load(path, weights_only=True)
    state, offsets = legacy_format.load(path, mmap=False)
    assert isinstance(state, dict) and offsets == {}
    for key, value in reference.items():
        assert state[key].stride() == value.stride() and torch.equal(state[key], value), key
    shared = state["view"].untyped_storage(), state["base"].untyped_storage()
    assert shared[0].data_ptr() == shared[1].data_ptr()  # storages shared as saved
    path.write_bytes(b"")  # the tensors do not depend on the file any more
    assert torch.equal(state["base"], reference["base"])


@pytest.mark.parametrize("platform_name", ["win32", "darwin", "linux"])
def test_mapping_elsewhere_or_without_madvise_maps_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform_name: str
) -> None:
    """Other platforms start no page-in thread; a C library without madvise only skips it."""
    path = tmp_path / "weights.bin"
    data = os.urandom(1 << 16)
    path.write_bytes(data)
    monkeypatch.setattr(sys, "platform", platform_name)

    calls: list[object] = []

    def no_libc(*args: object, **kwargs: object) -> object:
        calls.append(args)
        raise OSError("no C library here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    mapping = map_file(path, len(data))
    for thread in threading.enumerate():
        if thread.name == "wsl-images-page-in":
            thread.join()
    assert len(calls) == (platform_name == "linux")  # the page-in thread runs on Linux only
    assert failures == []  # and ends quietly without madvise
    assert bytes(mapping[0:64].tolist()) == data[:64]
